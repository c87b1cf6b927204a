//! The choice between a flag and the config file field it overrides: the flag when given
//! (and written into the file configuration, so it shows what is in effect), else the file's
//! value, each with its [`Origin`] for errors.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::error::{ConfigError, Origin};
use crate::config::kubelet_config::sources::Sources;
use crate::config::kubelet_config::validate::{check_positive, Attribution};
use crate::util::duration::GoDuration;

/// Chooses between a flag and the config-file field it overrides.
pub(super) struct Merger {
    /// Which file (the `--config` file or a drop-in) or flag set each configuration value,
    /// to name in errors.
    pub(super) sources: Sources,
}

impl Merger {
    pub(super) fn file_origin(&self, field: impl Into<String>) -> Origin {
        self.sources.origin(&field.into(), &[])
    }

    /// The flag's value when given (also written into the file configuration, so that `raw`
    /// shows what is in effect), else the file's value when set, else `None`.
    pub(super) fn pick<T: Clone>(
        &self,
        flag: Option<T>,
        flag_name: &'static str,
        field: &mut Option<T>,
        field_name: &'static str,
    ) -> Option<(T, Origin)> {
        if let Some(value) = flag {
            *field = Some(value.clone());
            return Some((value, Origin::Flag(flag_name)));
        }
        let value = field.clone()?;
        Some((value, self.file_origin(field_name)))
    }

    /// [`Merger::pick`] for a path flag whose file field is a string.
    pub(super) fn pick_path(
        &self,
        flag: Option<PathBuf>,
        flag_name: &'static str,
        field: &mut Option<String>,
        field_name: &'static str,
    ) -> Option<(PathBuf, Origin)> {
        if let Some(path) = flag {
            *field = Some(path.to_string_lossy().into_owned());
            return Some((path, Origin::Flag(flag_name)));
        }
        let value = field.clone()?;
        Some((PathBuf::from(value), self.file_origin(field_name)))
    }

    /// A duration setting: the flag, else the file's value unless zero (upstream's "unset"),
    /// else `default`; it must be above zero.
    pub(super) fn duration(
        &self,
        flag: Option<GoDuration>,
        flag_name: &'static str,
        field: &mut Option<GoDuration>,
        field_name: &'static str,
        default: GoDuration,
    ) -> Result<Duration, ConfigError> {
        let (value, origin) = self
            .pick(flag, flag_name, field, field_name)
            .filter(|(value, origin)| !value.is_zero() || matches!(origin, Origin::Flag(_)))
            .unwrap_or((default, Origin::Default(field_name)));
        check_positive(origin, value)
    }
}
