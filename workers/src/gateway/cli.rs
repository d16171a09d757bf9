//! `jetway-gateway`'s flags, each with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jetway_runtime::telemetry::LogArgs;

use super::Config;

/// A payment service provider simulated in Stripe's shape: charges with idempotency
/// keys, declines, outages and lost answers, kept in a journal across restarts.
#[derive(Debug, Parser)]
#[command(name = "jetway-gateway", version)]
pub struct GatewayArgs {
    /// Where the API, `/stats` and `/healthz` are served.
    #[arg(long, env = "JETWAY_GATEWAY_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// The journal of charges made, created if absent: a gateway restarted on it keeps
    /// every charge and idempotency key.
    #[arg(long, env = "JETWAY_GATEWAY_STATE")]
    pub state: PathBuf,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    #[arg(long, env = "JETWAY_GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The time to answer each charge request.
    #[arg(long, env = "JETWAY_GATEWAY_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// The share of charge requests refused with a 503 before anything is done, 0 to 1.
    #[arg(long, env = "JETWAY_GATEWAY_FAILURE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub failure_rate: f64,
    /// The share of charges declined with a 402, 0 to 1.
    #[arg(long, env = "JETWAY_GATEWAY_DECLINE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub decline_rate: f64,
    /// The share of charges made and saved whose answer is replaced by a 502, 0 to 1.
    #[arg(long, env = "JETWAY_GATEWAY_LOST_ANSWER_RATE", default_value_t = 0.0, value_parser = rate)]
    pub lost_answer_rate: f64,
    /// How long an idempotency key, and the charge made under it, is kept.
    #[arg(long, env = "JETWAY_GATEWAY_KEY_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub key_retention: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

impl GatewayArgs {
    pub fn config(&self) -> Config {
        Config {
            state: self.state.clone(),
            api_key: self.api_key.clone(),
            latency: self.latency,
            failure_rate: self.failure_rate,
            decline_rate: self.decline_rate,
            lost_answer_rate: self.lost_answer_rate,
            key_retention: self.key_retention,
        }
    }
}

/// A probability: a number from 0 to 1.
fn rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        Ok(_) => Err(format!("must be between 0 and 1, got {value}")),
        Err(_) => Err(format!("must be a number between 0 and 1, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_gateway_flag_has_an_environment_variable() {
        crate::cli::assert_every_flag_has_an_environment_variable(&GatewayArgs::command());
    }

    #[test]
    fn the_defaults_simulate_a_perfect_gateway() {
        let args = GatewayArgs::try_parse_from(["jetway-gateway", "--state", "journal.jsonl"]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:8090".parse().unwrap());
        let config = args.config();
        assert_eq!((config.failure_rate, config.decline_rate, config.lost_answer_rate), (0.0, 0.0, 0.0));
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(config.key_retention, Duration::from_secs(24 * 3600));
        assert_eq!(config.api_key, None);
    }

    #[test]
    fn a_rate_outside_zero_to_one_is_refused_naming_its_flag() {
        for (flag, value) in [("--failure-rate", "1.5"), ("--decline-rate", "-0.1"), ("--lost-answer-rate", "NaN")] {
            let given = format!("{flag}={value}");
            let error = GatewayArgs::try_parse_from(["jetway-gateway", "--state", "j", &given]).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(flag) && message.contains("between 0 and 1"), "{message}");
        }
    }

    #[test]
    fn the_state_is_required() {
        let error = GatewayArgs::try_parse_from(["jetway-gateway"]).unwrap_err().to_string();
        assert!(error.contains("--state"), "{error}");
    }
}
