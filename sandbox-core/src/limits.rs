//! Resource limits: what one execution may use.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::units::{format_bytes, parse_bytes, parse_cpus, parse_duration};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Whether sandboxed code may reach a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NetworkMode {
    /// No network at all (the default).
    #[default]
    None,
    /// The backend's default outbound network (Docker's `bridge`; the host's network elsewhere).
    Bridge,
}

impl NetworkMode {
    /// The mode's name as the CLI and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(NetworkMode::None),
            "bridge" => Ok(NetworkMode::Bridge),
            _ => Err(Error::InvalidLimit {
                name: "network",
                reason: format!("{text:?} is not a network mode; use \"none\" or \"bridge\""),
            }),
        }
    }
}

/// Validated resource limits for one execution.
///
/// Build them with [`Limits::builder`]; every value is checked, so a `Limits`
/// in hand is always usable. The defaults are 512 MiB of memory, 1 CPU, a 30 s
/// timeout, no network, 128 processes/threads, 1 MiB each of stdout and stderr,
/// and 64 MiB of scratch space.
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::Limits;
///
/// let limits = Limits::builder()
///     .memory("256m")?
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(limits.memory_bytes, 256 * 1024 * 1024);
/// assert_eq!(limits.cpus, 1.0);
/// # Ok::<(), sandbox_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Limits {
    /// Memory the whole execution may use, in bytes (no swap).
    pub memory_bytes: u64,
    /// CPUs the execution may use (fractions allowed).
    pub cpus: f64,
    /// Wall-clock time after which everything is killed.
    #[serde(with = "duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Processes and threads the execution may have at once.
    pub pids: u32,
    /// Bytes kept of stdout, and separately of stderr; past this the program is stopped.
    pub output_bytes: u64,
    /// Bytes the program may write to its scratch space.
    pub scratch_bytes: u64,
    /// Network access.
    pub network: NetworkMode,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 * MIB,
            cpus: 1.0,
            timeout: Duration::from_secs(30),
            pids: 128,
            output_bytes: MIB,
            scratch_bytes: 64 * MIB,
            network: NetworkMode::None,
        }
    }
}

impl Limits {
    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder::default()
    }

    /// Checks every value; [`LimitsBuilder::build`] calls this.
    pub fn validate(&self) -> Result<(), Error> {
        check_range("memory", self.memory_bytes, 8 * MIB, TIB, format_bytes)?;
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 1024.0) {
            return Err(Error::InvalidLimit {
                name: "cpus",
                reason: format!(
                    "{} is out of range; use a count from 0.01 to 1024",
                    self.cpus
                ),
            });
        }
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        check_range("timeout", timeout_ms, 1, 24 * 3600 * 1000, |ms| {
            format!("{ms}ms")
        })?;
        check_range("pids", u64::from(self.pids), 1, 1 << 20, |n| n.to_string())?;
        check_range("output", self.output_bytes, 1, GIB, format_bytes)?;
        check_range("scratch", self.scratch_bytes, 64 * KIB, TIB, format_bytes)?;
        Ok(())
    }
}

fn check_range(
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
    show: impl Fn(u64) -> String,
) -> Result<(), Error> {
    if value < min || value > max {
        return Err(Error::InvalidLimit {
            name,
            reason: format!(
                "{} is out of range; use a value from {} to {}",
                show(value),
                show(min),
                show(max)
            ),
        });
    }
    Ok(())
}

/// Builds [`Limits`], or overrides some of them for one request.
///
/// Unset fields take their value from the base: [`Limits::default`] for
/// [`build`](Self::build), an executor's own limits for [`build_over`](Self::build_over).
/// String setters parse human units and fail with [`Error::InvalidLimit`].
///
/// ```
/// use sandbox_core::Limits;
///
/// let base = Limits::builder().memory("1g")?.build()?;
/// let per_request = Limits::builder().timeout_str("500ms")?;
/// let merged = per_request.build_over(&base)?;
/// assert_eq!(merged.memory_bytes, 1 << 30);
/// assert_eq!(merged.timeout.as_millis(), 500);
/// # Ok::<(), sandbox_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LimitsBuilder {
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Wall-clock timeout.
    #[serde(with = "opt_duration_ms", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// Processes and threads.
    pub pids: Option<u32>,
    /// Output cap per stream, in bytes.
    pub output_bytes: Option<u64>,
    /// Scratch space in bytes.
    pub scratch_bytes: Option<u64>,
    /// Network access.
    pub network: Option<NetworkMode>,
}

impl LimitsBuilder {
    /// Sets the memory limit in bytes.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Sets the memory limit from a size such as `"512m"`.
    pub fn memory(self, size: &str) -> Result<Self, Error> {
        Ok(self.memory_bytes(parse_bytes("memory", size)?))
    }

    /// Sets the CPU count.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Sets the CPU count from text such as `"1.5"`.
    pub fn cpus_str(self, text: &str) -> Result<Self, Error> {
        Ok(self.cpus(parse_cpus(text)?))
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the timeout from text such as `"30s"` or `"500ms"`.
    pub fn timeout_str(self, text: &str) -> Result<Self, Error> {
        Ok(self.timeout(parse_duration("timeout", text)?))
    }

    /// Sets the process/thread limit.
    pub fn pids(mut self, pids: u32) -> Self {
        self.pids = Some(pids);
        self
    }

    /// Sets the output cap per stream, in bytes.
    pub fn output_bytes(mut self, bytes: u64) -> Self {
        self.output_bytes = Some(bytes);
        self
    }

    /// Sets the output cap per stream from a size such as `"1m"`.
    pub fn output(self, size: &str) -> Result<Self, Error> {
        Ok(self.output_bytes(parse_bytes("output", size)?))
    }

    /// Sets the scratch-space cap in bytes.
    pub fn scratch_bytes(mut self, bytes: u64) -> Self {
        self.scratch_bytes = Some(bytes);
        self
    }

    /// Sets the scratch-space cap from a size such as `"64m"`.
    pub fn scratch(self, size: &str) -> Result<Self, Error> {
        Ok(self.scratch_bytes(parse_bytes("scratch", size)?))
    }

    /// Sets the network mode.
    pub fn network(mut self, network: NetworkMode) -> Self {
        self.network = Some(network);
        self
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == LimitsBuilder::default()
    }

    /// The limits, with unset fields taken from [`Limits::default`], validated.
    pub fn build(&self) -> Result<Limits, Error> {
        self.build_over(&Limits::default())
    }

    /// The limits, with unset fields taken from `base`, validated.
    pub fn build_over(&self, base: &Limits) -> Result<Limits, Error> {
        let limits = Limits {
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            cpus: self.cpus.unwrap_or(base.cpus),
            timeout: self.timeout.unwrap_or(base.timeout),
            pids: self.pids.unwrap_or(base.pids),
            output_bytes: self.output_bytes.unwrap_or(base.output_bytes),
            scratch_bytes: self.scratch_bytes.unwrap_or(base.scratch_bytes),
            network: self.network.unwrap_or(base.network),
        };
        limits.validate()?;
        Ok(limits)
    }
}

impl From<&Limits> for LimitsBuilder {
    fn from(limits: &Limits) -> Self {
        LimitsBuilder {
            memory_bytes: Some(limits.memory_bytes),
            cpus: Some(limits.cpus),
            timeout: Some(limits.timeout),
            pids: Some(limits.pids),
            output_bytes: Some(limits.output_bytes),
            scratch_bytes: Some(limits.scratch_bytes),
            network: Some(limits.network),
        }
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

pub(crate) mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => super::duration_ms::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let limits = Limits::builder().build().unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.memory_bytes, 512 * MIB);
        assert_eq!(limits.cpus, 1.0);
        assert_eq!(limits.timeout, Duration::from_secs(30));
        assert_eq!(limits.network, NetworkMode::None);
        assert_eq!(limits.output_bytes, MIB);
    }

    #[test]
    fn zero_negative_and_absurd_values_are_rejected() {
        let cases: Vec<(&str, LimitsBuilder)> = vec![
            ("memory", Limits::builder().memory_bytes(0)),
            ("memory", Limits::builder().memory_bytes(u64::MAX)),
            ("cpus", Limits::builder().cpus(0.0)),
            ("cpus", Limits::builder().cpus(-1.0)),
            ("cpus", Limits::builder().cpus(f64::NAN)),
            ("cpus", Limits::builder().cpus(1e9)),
            ("timeout", Limits::builder().timeout(Duration::ZERO)),
            (
                "timeout",
                Limits::builder().timeout(Duration::from_secs(1 << 40)),
            ),
            ("pids", Limits::builder().pids(0)),
            ("output", Limits::builder().output_bytes(0)),
            ("scratch", Limits::builder().scratch_bytes(1)),
        ];
        for (name, builder) in cases {
            match builder.build() {
                Err(Error::InvalidLimit { name: got, reason }) => {
                    assert_eq!(got, name, "{reason}");
                    assert!(reason.contains("range"), "{reason}");
                }
                other => panic!("{name}: expected InvalidLimit, got {other:?}"),
            }
        }
        assert!(Limits::builder().memory("-1m").is_err());
        assert!("wifi".parse::<NetworkMode>().is_err());
    }

    #[test]
    fn overrides_apply_over_a_base() {
        let base = Limits::builder()
            .memory("1g")
            .unwrap()
            .pids(10)
            .build()
            .unwrap();
        let merged = Limits::builder().pids(20).build_over(&base).unwrap();
        assert_eq!(merged.memory_bytes, GIB);
        assert_eq!(merged.pids, 20);
        assert_eq!(LimitsBuilder::from(&base).build().unwrap(), base);
    }

    #[test]
    fn limits_serialize_with_milliseconds() {
        let json = serde_json::to_value(Limits::default()).unwrap();
        assert_eq!(json["timeout_ms"], 30_000);
        assert_eq!(json["network"], "none");
        let back: Limits = serde_json::from_value(json).unwrap();
        assert_eq!(back, Limits::default());
    }
}
