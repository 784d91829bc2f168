use testenv::Promtool;

use crate::fixture;

#[test]
fn promtool_checks_and_unit_tests_rules() -> anyhow::Result<()> {
    let promtool = Promtool::new()?;
    let checked = promtool.check_rules(&fixture("rules/smoke-rules.yaml"))?;
    assert!(checked.contains("SUCCESS: 1 rules found"), "{checked}");
    let tested = promtool.test_rules(&[&fixture("rules/smoke-rules-test.yaml")])?;
    assert!(tested.contains("SUCCESS"), "{tested}");

    let broken = promtool.check_rules(&fixture("rules/broken-rules.yaml"));
    let message = format!("{:?}", broken.err());
    assert!(
        message.contains("parse error") || message.contains("unexpected"),
        "{message}"
    );
    Ok(())
}
