//! What goes wrong while building the settings: [`ConfigError`], and the [`Origin`] of the
//! value at fault (a flag, a config file field, the machine or a default). Shared by the
//! config file reader, its value checks and the flag merge.

use std::fmt;
use std::io;
use std::path::PathBuf;

use structopt::clap::{self, ErrorKind};

/// Where a setting's value came from, so errors can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, by its upstream name (`--max-pods`).
    Flag(&'static str),
    /// A field of the `--config` file or of a `--config-dir` drop-in, by its path in the
    /// document (`authentication.x509.clientCAFile`, `clusterDNS[1]`).
    File {
        /// The config file or drop-in.
        file: PathBuf,
        /// The field's path.
        field: String,
    },
    /// A file describing the machine, such as the hostname file.
    Machine(PathBuf),
    /// The built-in default of the named setting.
    Default(&'static str),
}

impl Origin {
    /// An error saying that `value`, from here, is invalid for `reason`.
    pub fn invalid(self, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::File { file, field } => write!(f, "{}: {field}", file.display()),
            Origin::Machine(path) => write!(f, "{}", path.display()),
            Origin::Default(setting) => write!(f, "default {setting}"),
        }
    }
}

/// Why the kubelet cannot start with this command line and configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad command line, or `--help`/`--version`: clap's text, ready to print. As clap's
    /// own `exit` does, print it to stdout when [`ConfigError::exit_code`] is 0 and to stderr
    /// otherwise; for `--version` the text is the version line.
    #[error("{0}")]
    Cli(clap::Error),
    /// The `--config` file or a drop-in cannot be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        /// The config file or drop-in.
        file: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
    /// The `--config-dir` directory, or a directory below it, cannot be listed.
    #[error("cannot read config directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why listing it failed.
        source: io::Error,
    },
    /// The `--config` file or a drop-in is not a well-formed KubeletConfiguration: bad YAML,
    /// an unknown field or a value of the wrong type. `reason` starts with the field's path.
    #[error("{}: {reason}", file.display())]
    Parse {
        /// The config file or drop-in.
        file: PathBuf,
        /// What is wrong, with the field's path and the line and column.
        reason: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{origin}: invalid value {value:?}: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What it should have been.
        reason: String,
    },
    /// The machine's hostname cannot be read (and no `--hostname-override` was given).
    #[error("cannot read the hostname from {}: {source} (set --hostname-override)", path.display())]
    Hostname {
        /// The hostname file.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
}

impl ConfigError {
    /// The process exit code for this error: 0 for `--help` and `--version` (which are not
    /// failures), 1 for everything else, as clap and the upstream kubelet do.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(err)
                if matches!(
                    err.kind,
                    ErrorKind::HelpDisplayed | ErrorKind::VersionDisplayed
                ) =>
            {
                0
            }
            _ => 1,
        }
    }
}
