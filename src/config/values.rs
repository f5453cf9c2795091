//! Values as an operator types them: durations (`30s`, `5m`), sizes
//! (`256KiB`), PEM certificate files, and values that may hold a password
//! (a proxy URL). Shared by the command line, the
//! config file and the `check` subcommand, so each is parsed one way.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::time::Duration;

/// The longest duration any setting takes: ten years. Lifetimes are added
/// to clock readings and saved in the state directory as 32-bit seconds; a
/// bound far below both limits keeps every sum of settings (TTL +
/// max-stale, say) representable.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `d` if it is at most [`MAX_DURATION`].
pub fn bounded_duration(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err("must be at most 3650d (ten years)".to_string());
    }
    Ok(d)
}

/// A humantime duration (`30s`, `5m`, `24h`), at most [`MAX_DURATION`].
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{e} (expected a duration such as 30s, 5m, 24h)"))
        .and_then(bounded_duration)
}

/// A duration greater than zero.
pub fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(d)
}

/// Parses `1024`, `256KiB`, `1MiB` (also `KB`/`MB`, read as binary units).
pub fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| "expected a size such as 262144, 256KiB or 1MiB".to_string())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit '{other}' (use KiB or MiB)")),
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())?;
    if size == 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(size)
}

/// Reads every certificate from a PEM file; an empty or unreadable file is an error.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A flag value that may hold a password (`--upstream-proxy`): `Debug`
/// never shows it, and clap is given no parser that could fail and echo
/// it; it is checked in the command line's `into_config` with redacted errors.
#[derive(Clone, PartialEq, Eq)]
pub struct SensitiveArg(pub String);

impl std::fmt::Debug for SensitiveArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SensitiveArg({:?})",
            crate::upstream::proxy_rules::redact(&self.0)
        )
    }
}

/// clap's parser for [`SensitiveArg`]: accepts anything.
pub fn sensitive(value: &str) -> Result<SensitiveArg, std::convert::Infallible> {
    Ok(SensitiveArg(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("2 MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        assert!(parse_duration("3651d").is_err());
        assert!(parse_positive_duration("10000000000y").is_err());
    }
}
