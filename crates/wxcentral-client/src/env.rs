//! The versions of a mini program a link, QR code or message may open.
//!
//! WeChat spells the same three versions two ways: `env_version` of the QR-code and URL-link
//! APIs says `release`/`trial`/`develop`, `miniprogram_state` of subscribe messages says
//! `formal`/`trial`/`developer`. One enum with both spellings keeps callers from mixing them up.

use serde::{Deserialize, Serialize};

/// A mini program's version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvVersion {
    /// The published version (WeChat's default).
    #[default]
    Release,
    /// The trial (体验版) version.
    Trial,
    /// The development (开发版) version.
    Develop,
}

impl EnvVersion {
    /// The `env_version` value (`getwxacodeunlimit`, `generatescheme`, `generate_urllink`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Trial => "trial",
            Self::Develop => "develop",
        }
    }

    /// The `miniprogram_state` value of `subscribe/send`.
    pub fn miniprogram_state(self) -> &'static str {
        match self {
            Self::Release => "formal",
            Self::Trial => "trial",
            Self::Develop => "developer",
        }
    }
}

impl std::fmt::Display for EnvVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings() {
        let all = [EnvVersion::Release, EnvVersion::Trial, EnvVersion::Develop];
        assert_eq!(all.map(EnvVersion::as_str), ["release", "trial", "develop"]);
        assert_eq!(all.map(EnvVersion::miniprogram_state), ["formal", "trial", "developer"]);
        assert_eq!(serde_json::to_string(&EnvVersion::Develop).unwrap(), "\"develop\"");
        assert_eq!(EnvVersion::default(), EnvVersion::Release);
    }
}
