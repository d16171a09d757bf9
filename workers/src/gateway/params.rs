//! The parameters of `POST /v1/charges`, parsed from its form body (pure).
//!
//! Parsing is Stripe's: `amount` in minor units, a three-letter `currency` answered in
//! lower case, an optional `description`, and `metadata[KEY]=VALUE` pairs. A parameter
//! given twice or one the gateway does not know is refused, so a client's typo shows
//! as a 400 naming it instead of a charge made without it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Stripe's limits on metadata: keys, characters in a key, characters in a value.
const METADATA_KEYS: usize = 50;
const METADATA_KEY_CHARS: usize = 40;
const METADATA_VALUE_CHARS: usize = 500;

/// What a charge request asks for; two requests under one idempotency key must ask
/// for the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeParams {
    /// In the currency's minor unit (cents), at least 1.
    pub amount: u64,
    /// Three lower-case letters.
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A parameter the request got wrong, answered 400 with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter as the client named it, such as `amount` or `metadata[order]`.
    pub param: String,
    /// Stripe's code for the error, where it has one.
    pub code: Option<&'static str>,
    pub message: String,
}

impl ParamError {
    fn new(param: &str, message: impl Into<String>) -> Self {
        Self { param: param.to_owned(), code: None, message: message.into() }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

impl ChargeParams {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Result<Self, ParamError> {
        let mut amount = None;
        let mut currency = None;
        let mut description = None;
        let mut metadata = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            let (name, value) = (name.as_ref(), value.into_owned());
            if let Some(key) = metadata_key(name)? {
                check_metadata(name, key, &value)?;
                if metadata.insert(key.to_owned(), value).is_some() {
                    return Err(given_twice(name));
                }
                if metadata.len() > METADATA_KEYS {
                    return Err(ParamError::new(name, format!("metadata has more than {METADATA_KEYS} keys")));
                }
                continue;
            }
            match name {
                "amount" => set_once(&mut amount, name, parse_amount(&value)?)?,
                "currency" => set_once(&mut currency, name, parse_currency(&value)?)?,
                "description" => set_once(&mut description, name, value)?,
                _ => {
                    return Err(ParamError::new(name, format!("Received unknown parameter: {name}"))
                        .with_code("parameter_unknown"));
                }
            }
        }
        Ok(Self {
            amount: amount.ok_or_else(|| missing("amount"))?,
            currency: currency.ok_or_else(|| missing("currency"))?,
            // Stripe reads an empty optional parameter as not given.
            description: description.filter(|text| !text.is_empty()),
            metadata,
        })
    }

    /// The order this charge pays for: its `metadata[order]`.
    pub fn order(&self) -> Option<&str> {
        self.metadata.get(super::ORDER_METADATA_KEY).map(String::as_str)
    }
}

/// The KEY of `metadata[KEY]`, `None` for a parameter that is not metadata.
fn metadata_key(name: &str) -> Result<Option<&str>, ParamError> {
    let Some(rest) = name.strip_prefix("metadata") else { return Ok(None) };
    match rest.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        Some(key) if !key.is_empty() && !key.contains(['[', ']']) => Ok(Some(key)),
        _ => Err(ParamError::new(name, format!("{name} is not of the form metadata[KEY]=VALUE"))),
    }
}

fn check_metadata(name: &str, key: &str, value: &str) -> Result<(), ParamError> {
    if key.chars().count() > METADATA_KEY_CHARS {
        return Err(ParamError::new(name, format!("metadata keys can be at most {METADATA_KEY_CHARS} characters")));
    }
    if value.chars().count() > METADATA_VALUE_CHARS {
        return Err(ParamError::new(name, format!("metadata values can be at most {METADATA_VALUE_CHARS} characters")));
    }
    Ok(())
}

fn parse_amount(value: &str) -> Result<u64, ParamError> {
    let invalid =
        || ParamError::new("amount", format!("Invalid integer: {value}")).with_code("parameter_invalid_integer");
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    match value.parse::<u64>() {
        Ok(0) => Err(ParamError::new("amount", "amount must be at least 1").with_code("parameter_invalid_integer")),
        Ok(amount) => Ok(amount),
        Err(_) => Err(invalid()),
    }
}

fn parse_currency(value: &str) -> Result<String, ParamError> {
    if value.len() == 3 && value.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(ParamError::new("currency", format!("Invalid currency: {value}; give three letters such as eur")))
    }
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), ParamError> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(given_twice(name)),
    }
}

fn given_twice(name: &str) -> ParamError {
    ParamError::new(name, format!("{name} is given more than once"))
}

fn missing(name: &str) -> ParamError {
    ParamError::new(name, format!("Missing required param: {name}.")).with_code("parameter_missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(body: &str) -> String {
        ChargeParams::parse(body.as_bytes()).expect_err("a bad request").param
    }

    #[test]
    fn a_full_charge_request_is_read_with_its_currency_lower_cased() {
        let params = ChargeParams::parse(
            b"amount=2999&currency=EUR&description=Order+o-1&metadata%5Border%5D=o-1&metadata[x]=y",
        )
        .unwrap();
        assert_eq!(params.amount, 2999);
        assert_eq!(params.currency, "eur");
        assert_eq!(params.description.as_deref(), Some("Order o-1"));
        assert_eq!(params.order(), Some("o-1"));
        assert_eq!(params.metadata.get("x").map(String::as_str), Some("y"));
    }

    #[test]
    fn an_empty_description_is_no_description() {
        assert_eq!(ChargeParams::parse(b"amount=1&currency=usd&description=").unwrap().description, None);
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert_eq!(param_of("currency=eur"), "amount");
        assert_eq!(param_of("amount=1"), "currency");
        assert_eq!(param_of("amount=0&currency=eur"), "amount");
        assert_eq!(param_of("amount=-5&currency=eur"), "amount");
        assert_eq!(param_of("amount=29.99&currency=eur"), "amount");
        assert_eq!(param_of("amount=99999999999999999999999&currency=eur"), "amount");
        assert_eq!(param_of("amount=1&currency=euro"), "currency");
        assert_eq!(param_of("amount=1&currency=e1r"), "currency");
        assert_eq!(param_of("amount=1&amount=2&currency=eur"), "amount");
        assert_eq!(param_of("amount=1&currency=eur&customer=cus_1"), "customer");
        assert_eq!(param_of("amount=1&currency=eur&metadata=x"), "metadata");
        assert_eq!(param_of("amount=1&currency=eur&metadata[]=x"), "metadata[]");
        assert_eq!(param_of("amount=1&currency=eur&metadata[a]=1&metadata[a]=2"), "metadata[a]");
        let long_key = format!("amount=1&currency=eur&metadata[{}]=x", "k".repeat(41));
        assert!(param_of(&long_key).starts_with("metadata[kkk"));
    }

    #[test]
    fn a_missing_amount_carries_stripes_code() {
        let error = ChargeParams::parse(b"currency=eur").unwrap_err();
        assert_eq!(error.code, Some("parameter_missing"));
        assert_eq!(error.message, "Missing required param: amount.");
    }

    #[test]
    fn params_compare_by_value_whatever_their_order() {
        let first = ChargeParams::parse(b"amount=5&currency=eur&metadata[a]=1&metadata[b]=2").unwrap();
        let second = ChargeParams::parse(b"metadata[b]=2&currency=EUR&metadata[a]=1&amount=5").unwrap();
        assert_eq!(first, second);
        let other = ChargeParams::parse(b"amount=5&currency=eur&metadata[a]=1").unwrap();
        assert_ne!(first, other);
    }
}
