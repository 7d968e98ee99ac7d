//! `docker volume create -o key=value` options: which are accepted and what they mean.

use std::collections::BTreeMap;

use super::{Error, Result, VolumeName, MAX_NAME_LEN};
use crate::size::Size;

/// Options accepted by Create, for error messages.
const ACCEPTED: &str =
    "size (e.g. 10G) and profile (gold, silver, bronze or a backend's own profile name)";

/// The `Opts` of a Create call, as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions(pub BTreeMap<String, String>);

/// What a Create call asks for, after validation and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Dataset size.
    pub size: Size,
    /// Storage profile, if any.
    pub profile: Option<String>,
}

impl CreateOptions {
    /// Validates every option; unknown keys are refused rather than ignored, so typos are not silent.
    pub fn validate(
        &self,
        name: &VolumeName,
        default_size: Size,
        default_profile: Option<&str>,
    ) -> Result<CreateRequest> {
        let refuse = |key: &str, value: &str, reason: String| Error::InvalidOption {
            name: name.to_string(),
            key: key.into(),
            value: value.into(),
            reason,
        };
        let mut request = CreateRequest {
            size: default_size,
            profile: default_profile.map(str::to_string),
        };
        for (key, value) in &self.0 {
            match key.as_str() {
                "size" => {
                    request.size =
                        Size::parse(value).map_err(|e| refuse(key, value, e.to_string()))?;
                }
                "profile" => {
                    let profile = value.trim();
                    if profile.is_empty() || profile.chars().count() > MAX_NAME_LEN {
                        return Err(refuse(
                            key,
                            value,
                            "give a profile name of 1 to 256 characters, e.g. gold, silver or bronze".into(),
                        ));
                    }
                    request.profile = Some(profile.to_string());
                }
                _ => {
                    return Err(refuse(
                        key,
                        value,
                        format!("unknown option; accepted options are {ACCEPTED}"),
                    ));
                }
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> CreateOptions {
        CreateOptions(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn name() -> VolumeName {
        VolumeName::new("db").unwrap()
    }

    const DEFAULT: Size = Size::from_bytes(75 << 30);

    #[test]
    fn defaults_apply_when_no_option_is_given() {
        let request = opts(&[])
            .validate(&name(), DEFAULT, Some("bronze"))
            .unwrap();
        assert_eq!(request.size, DEFAULT);
        assert_eq!(request.profile.as_deref(), Some("bronze"));
    }

    #[test]
    fn size_and_profile_are_taken() {
        let request = opts(&[("size", "10G"), ("profile", "gold")])
            .validate(&name(), DEFAULT, None)
            .unwrap();
        assert_eq!(request.size.bytes(), 10 << 30);
        assert_eq!(request.profile.as_deref(), Some("gold"));
    }

    #[test]
    fn unknown_option_names_the_accepted_ones() {
        let err = opts(&[("colour", "red")])
            .validate(&name(), DEFAULT, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("volume db") && err.contains("colour") && err.contains("size"),
            "{err}"
        );
    }

    #[test]
    fn bad_size_is_an_error_not_a_default() {
        let err = opts(&[("size", "lots")])
            .validate(&name(), DEFAULT, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("size=\"lots\"") && err.contains("not a size"),
            "{err}"
        );
    }

    #[test]
    fn empty_profile_is_refused() {
        assert!(opts(&[("profile", " ")])
            .validate(&name(), DEFAULT, None)
            .is_err());
    }
}
