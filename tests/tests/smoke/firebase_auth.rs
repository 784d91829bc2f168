use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use testenv::AuthEmulator;

fn decode_part(token: &str, index: usize) -> anyhow::Result<Value> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or_else(|| anyhow::anyhow!("not a JWT: {token}"))?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

#[tokio::test]
async fn auth_emulator_signs_up_users_with_production_shaped_tokens() -> anyhow::Result<()> {
    let project = "demo-smoke";
    let auth = AuthEmulator::start(project).await?;
    let user = auth.sign_up("ada@example.com", "correct horse").await?;
    let header = decode_part(&user.id_token, 0)?;
    let claims = decode_part(&user.id_token, 1)?;
    // Unsigned: the emulator is never to be trusted outside emulator mode.
    assert_eq!(header["alg"], "none");
    assert_eq!(claims["aud"], project);
    assert_eq!(
        claims["iss"],
        format!("https://securetoken.google.com/{project}")
    );
    assert_eq!(claims["sub"], user.uid.as_str());
    assert_eq!(claims["email"], "ada@example.com");

    auth.set_custom_claims(&user.uid, &serde_json::json!({"admin": true}))
        .await?;
    let again = auth.sign_in("ada@example.com", "correct horse").await?;
    assert_eq!(decode_part(&again.id_token, 1)?["admin"], true);

    let wrong = auth.sign_in("ada@example.com", "wrong").await;
    assert!(wrong.is_err(), "a wrong password must be refused");
    Ok(())
}
