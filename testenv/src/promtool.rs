//! promtool from Debian's prometheus package: checks and unit-tests alerting rules.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;
use crate::{Result, Tools};

pub struct Promtool {
    bin: PathBuf,
}

impl Promtool {
    pub fn new() -> Result<Self> {
        Ok(Self {
            bin: Tools::new().promtool()?,
        })
    }

    /// `promtool check rules FILE`: stdout on success, the complaints in the error.
    pub fn check_rules(&self, rules: &Path) -> Result<String> {
        let out = run(Command::new(&self.bin).arg("check").arg("rules").arg(rules))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `promtool test rules FILE...`: rule unit tests.
    pub fn test_rules(&self, tests: &[&Path]) -> Result<String> {
        let out = run(Command::new(&self.bin).arg("test").arg("rules").args(tests))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
