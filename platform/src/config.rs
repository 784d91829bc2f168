//! Configuration pieces both binaries parse the same way (clap, each flag also an env var), so
//! a Helm chart sets `REDIS_SENTINELS` once for api-server and worker alike.

use clap::Args;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("set either REDIS_URL or REDIS_SENTINELS (with REDIS_MASTER_NAME), not both")]
    RedisBoth,
    #[error("no Redis configured: set REDIS_URL or REDIS_SENTINELS")]
    RedisNone,
}

/// Where Redis is: a plain URL, or Sentinel addresses plus the master's name.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Plain Redis URL (`redis://host:port/`), for a server without Sentinel.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Comma-separated Sentinel URLs (`redis://host:26379`).
    #[arg(long, env = "REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,
    /// Name of the master the sentinels monitor.
    #[arg(long, env = "REDIS_MASTER_NAME", default_value = "mymaster")]
    pub redis_master_name: String,
    /// Password of the Redis data nodes (`AUTH`), for the master found through Sentinel and
    /// for `REDIS_URL` when the URL carries no credentials of its own. Sentinels themselves are
    /// reached without a password. The value is never printed (not even by `--help`).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// ACL user for `REDIS_PASSWORD`; unset means the `default` user.
    #[arg(long, env = "REDIS_USERNAME", requires = "redis_password")]
    pub redis_username: Option<String>,
}

/// Credentials for the Redis data nodes. `Debug` never shows the password, so an endpoint can
/// be logged whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl RedisAuth {
    pub fn password(password: impl Into<String>) -> Self {
        Self {
            username: None,
            password: Some(password.into()),
        }
    }
}

impl std::fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The validated choice between the two ways of reaching Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    Url {
        url: String,
        auth: RedisAuth,
    },
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        /// For the data nodes only: the sentinels are reached without a password.
        auth: RedisAuth,
    },
}

impl RedisArgs {
    pub fn endpoint(&self) -> Result<RedisEndpoint, ConfigError> {
        let auth = RedisAuth {
            username: self.redis_username.clone(),
            password: self.redis_password.clone(),
        };
        match (&self.redis_url, self.redis_sentinels.is_empty()) {
            (Some(_), false) => Err(ConfigError::RedisBoth),
            (Some(url), true) => Ok(RedisEndpoint::Url {
                url: url.clone(),
                auth,
            }),
            (None, false) => Ok(RedisEndpoint::Sentinel {
                sentinels: self.redis_sentinels.clone(),
                master_name: self.redis_master_name.clone(),
                auth,
            }),
            (None, true) => Err(ConfigError::RedisNone),
        }
    }
}

/// Which Firestore database, and whether it is the emulator.
#[derive(Debug, Clone, Args)]
pub struct FirestoreArgs {
    /// Google Cloud project that owns the Firestore database.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub project_id: String,
    /// Firestore database id.
    #[arg(long, env = "FIRESTORE_DATABASE_ID", default_value = "(default)")]
    pub firestore_database: String,
    /// `host:port` of the Firestore emulator (the standard variable); unset in production.
    #[arg(long, env = "FIRESTORE_EMULATOR_HOST")]
    pub firestore_emulator_host: Option<String>,
}

/// The bucket uploads go to, shared by api-server (signs URLs, deletes objects) and worker
/// (finalizes uploads). Without a bucket the Files API is off.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Cloud Storage bucket for user uploads (e.g. `my-project.appspot.com`); the Files API is
    /// off (503) without it.
    #[arg(long, env = "STORAGE_BUCKET")]
    pub storage_bucket: Option<String>,
    /// `host:port` (or `http://host:port`) of a Cloud Storage emulator such as fake-gcs-server
    /// (the standard variable). Requests go there over plain HTTP without credentials; unset in
    /// production.
    #[arg(long, env = "STORAGE_EMULATOR_HOST")]
    pub storage_emulator_host: Option<String>,
    /// Largest upload accepted, in bytes (declared at create, checked again at finalize).
    #[arg(long, env = "STORAGE_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub storage_max_upload_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, sentinels: &[&str]) -> RedisArgs {
        RedisArgs {
            redis_url: url.map(str::to_string),
            redis_sentinels: sentinels.iter().map(|s| s.to_string()).collect(),
            redis_master_name: "m".into(),
            redis_password: None,
            redis_username: None,
        }
    }

    #[test]
    fn exactly_one_redis_endpoint_is_accepted() {
        assert_eq!(args(None, &[]).endpoint(), Err(ConfigError::RedisNone));
        assert_eq!(
            args(Some("redis://a"), &["redis://s"]).endpoint(),
            Err(ConfigError::RedisBoth)
        );
        assert_eq!(
            args(Some("redis://a"), &[]).endpoint(),
            Ok(RedisEndpoint::Url {
                url: "redis://a".into(),
                auth: RedisAuth::default()
            })
        );
        assert_eq!(
            args(None, &["redis://s1", "redis://s2"]).endpoint(),
            Ok(RedisEndpoint::Sentinel {
                sentinels: vec!["redis://s1".into(), "redis://s2".into()],
                master_name: "m".into(),
                auth: RedisAuth::default()
            })
        );
    }

    #[test]
    fn the_password_is_carried_but_never_shown() {
        let mut a = args(None, &["redis://s1"]);
        a.redis_password = Some("s3cret-pw".into());
        let endpoint = a.endpoint().expect("valid");
        match &endpoint {
            RedisEndpoint::Sentinel { auth, .. } => {
                assert_eq!(auth.password.as_deref(), Some("s3cret-pw"))
            }
            other => panic!("expected sentinel endpoint, got {other:?}"),
        }
        assert!(!format!("{endpoint:?}").contains("s3cret-pw"));
    }

    #[test]
    fn help_does_not_print_the_password_from_the_environment() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            redis: RedisArgs,
        }
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "redis_password")
            .expect("redis_password arg");
        assert!(arg.is_hide_env_values_set());
    }
}
