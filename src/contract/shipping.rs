//! Contract v2's shipping block: where and how an order ships.
//!
//! Invariant: a [`Shipping`] that leaves [`validate`] names a real ISO 3166-1 alpha-2 country in
//! upper case and holds only texts the `orders.shipping` column stores as is (bounded, no
//! control characters), like every other text of the contract.

use std::str::FromStr;

use compact_str::CompactString;
use iso_currency::Country;
use serde::{Deserialize, Serialize};

use super::Rejection;
use super::validate::{excerpt, invalid, text};

pub const MAX_POSTAL_CODE_CHARS: usize = 16;
pub const MAX_CITY_CHARS: usize = 85;

/// How the order reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShippingMethod {
    Standard,
    Express,
    Pickup,
}

/// Where and how an order ships (v2). Unknown fields inside it are ignored, as everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    pub method: ShippingMethod,
    /// ISO 3166-1 alpha-2, upper case (`DE`).
    pub country: CompactString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<CompactString>,
}

pub(super) fn validate(shipping: &Shipping) -> Result<(), Rejection> {
    // The crate's table maps the empty string to `Unspecified`: only two letters are a code.
    let letters =
        shipping.country.len() == 2 && shipping.country.bytes().all(|b| b.is_ascii_uppercase());
    if !letters || Country::from_str(&shipping.country).is_err() {
        return invalid(format!(
            "shipping.country {} is not an ISO 3166-1 alpha-2 code",
            excerpt(&shipping.country)
        ));
    }
    if let Some(postal_code) = &shipping.postal_code {
        text(&"shipping.postal_code", postal_code, MAX_POSTAL_CODE_CHARS)?;
    }
    if let Some(city) = &shipping.city {
        text(&"shipping.city", city, MAX_CITY_CHARS)?;
    }
    Ok(())
}
