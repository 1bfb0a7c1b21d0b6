//! Small shared pieces: provisioning states, ISO-8601 durations and literal formatting.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// ARM `provisioningState` of computes, endpoints and deployments. Extensible: unknown values are
/// kept as text rather than rejected.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ProvisioningState {
    /// Being created.
    Creating,
    /// Being updated.
    Updating,
    /// Being scaled (deployments).
    Scaling,
    /// Being deleted.
    Deleting,
    /// Ready.
    Succeeded,
    /// Failed.
    Failed,
    /// Canceled.
    Canceled,
    /// Any other value Azure reports.
    Other(String),
}

impl ProvisioningState {
    /// Whether Azure is still working on the resource (no write should be sent now).
    pub fn is_modifying(&self) -> bool {
        matches!(self, Self::Creating | Self::Updating | Self::Scaling | Self::Deleting)
    }

    /// Whether the state is final.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

impl From<String> for ProvisioningState {
    fn from(s: String) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "creating" => Self::Creating,
            "updating" => Self::Updating,
            "scaling" => Self::Scaling,
            "deleting" => Self::Deleting,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" | "cancelled" => Self::Canceled,
            _ => Self::Other(s),
        }
    }
}

impl From<ProvisioningState> for String {
    fn from(s: ProvisioningState) -> Self {
        s.to_string()
    }
}

impl fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Scaling => "Scaling",
            Self::Deleting => "Deleting",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
            Self::Other(s) => s,
        })
    }
}

/// Formats a duration as ISO 8601 in seconds (`PT600S`, `PT90.5S`), the form the SDK sends.
pub fn iso_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("PT{}S", ms / 1000)
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("PT{}S", text.trim_end_matches('0'))
    }
}

/// Parses an ISO-8601 duration of the `PnDTnHnMnS` family (what ARM returns for probes, timeouts
/// and idle times). Years and months are not used by these APIs and are rejected.
pub fn parse_iso_duration(text: &str) -> Option<Duration> {
    let rest = text.trim().strip_prefix('P').or_else(|| text.trim().strip_prefix('p'))?;
    let (date, time) = match rest.find(['T', 't']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut parse_part = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                num.push(if c == ',' { '.' } else { c });
            } else {
                let factor = units.iter().find(|(u, _)| u.eq_ignore_ascii_case(&c))?.1;
                secs += num.parse::<f64>().ok()? * factor;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    parse_part(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    parse_part(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    Some(Duration::from_secs_f64(secs))
}

/// Formats a float the way Python's `str()` does (`5e-06`, `0.0002`, `1.0`), because that is the
/// literal text the SDK sends for numeric pipeline inputs.
pub fn python_float(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let abs = v.abs();
    if v != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust's `{:e}` gives the shortest round-trip mantissa, like Python's repr.
        let text = format!("{v:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let text = format!("{v}");
    if text.contains('.') { text } else { format!("{text}.0") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(iso_duration(Duration::from_secs(600)), "PT600S");
        assert_eq!(iso_duration(Duration::from_millis(90_000)), "PT90S");
        assert_eq!(iso_duration(Duration::from_millis(90_500)), "PT90.5S");
        assert_eq!(parse_iso_duration("PT600S"), Some(Duration::from_secs(600)));
        assert_eq!(parse_iso_duration("PT10M"), Some(Duration::from_secs(600)));
        assert_eq!(parse_iso_duration("P1DT1H2M3.5S"), Some(Duration::from_secs_f64(86_400.0 + 3723.5)));
        assert_eq!(parse_iso_duration("PT2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_iso_duration("00:02:00"), None);
        assert_eq!(parse_iso_duration("PT5X"), None);
    }

    #[test]
    fn python_float_matches_python_str() {
        let rows = [
            (5e-6, "5e-06"),
            (2e-5, "2e-05"),
            (0.0002, "0.0002"),
            (1.0, "1.0"),
            (0.9, "0.9"),
            (0.999, "0.999"),
            (1e-8, "1e-08"),
            (0.0, "0.0"),
            (-1.5, "-1.5"),
            (1e16, "1e+16"),
            (123.0, "123.0"),
        ];
        for (v, want) in rows {
            assert_eq!(python_float(v), want, "{v}");
        }
    }

    #[test]
    fn provisioning_state_is_extensible() {
        let s: ProvisioningState = serde_json::from_str(r#""Succeeded""#).expect("parse");
        assert_eq!(s, ProvisioningState::Succeeded);
        let s: ProvisioningState = serde_json::from_str(r#""Migrating""#).expect("parse");
        assert_eq!(s, ProvisioningState::Other("Migrating".into()));
        assert_eq!(serde_json::to_string(&s).expect("ser"), r#""Migrating""#);
        assert!(ProvisioningState::Updating.is_modifying());
    }
}
