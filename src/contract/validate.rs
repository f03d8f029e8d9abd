//! Rules on values that types alone cannot state.
//!
//! Invariant: an [`OrderEvent`] leaves this module only if it fits the `orders` table as is
//! (lengths, ranges, no NUL characters PostgreSQL text refuses) and its total is consistent, so
//! that a batch write can only fail for reasons of the database, not of the data.

use uuid::Uuid;

use super::currency::is_iso_4217;
use super::{EventType, LineItem, OrderEvent, OrderStatus, Reason, Rejection, WireEvent, shipping};

pub const MAX_ITEMS: usize = 1_000;
pub const MAX_CUSTOMER_ID_CHARS: usize = 128;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_QUANTITY: u32 = 1_000_000;
/// One unit may cost at most 10^12 minor units (10 billion in a two-decimal currency).
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;

pub(super) fn event(wire: WireEvent) -> Result<OrderEvent, Rejection> {
    if wire.version < 1 {
        return invalid(format!("version must be >= 1, got {}", wire.version));
    }
    text(&"customer_id", &wire.customer_id, MAX_CUSTOMER_ID_CHARS)?;
    if !is_iso_4217(&wire.currency) {
        return invalid(format!(
            "currency {} is not an ISO 4217 code",
            excerpt(&wire.currency)
        ));
    }
    if wire.event_type == EventType::Cancelled && wire.status != OrderStatus::Cancelled {
        return invalid(format!(
            "event_type \"cancelled\" requires status \"cancelled\", got \"{}\"",
            wire.status.as_str()
        ));
    }
    let sum = items(&wire.items)?;
    match wire.discount_minor {
        None if wire.total_minor != sum => {
            return invalid(format!(
                "total_minor {} does not equal the sum of the items, {sum}",
                wire.total_minor
            ));
        }
        Some(discount) if !(0..=sum).contains(&discount) => {
            return invalid(format!(
                "discount_minor must be 0 to the sum of the items ({sum}), got {discount}"
            ));
        }
        Some(discount) if wire.total_minor != sum - discount => {
            return invalid(format!(
                "total_minor {} does not equal the sum of the items less discount_minor, \
                 {sum} - {discount} = {}",
                wire.total_minor,
                sum - discount
            ));
        }
        _ => {}
    }
    if let Some(s) = &wire.shipping {
        shipping::validate(s)?;
    }
    Ok(OrderEvent {
        event_id: wire.event_id,
        event_type: wire.event_type,
        order_id: wire.order_id,
        version: wire.version,
        occurred_at: wire.occurred_at,
        customer_id: wire.customer_id,
        status: wire.status,
        currency: wire.currency,
        items: wire.items,
        total_minor: wire.total_minor,
        discount_minor: wire.discount_minor,
        shipping: wire.shipping,
    })
}

/// The message key carries the order id so that all events of an order share a partition.
/// Kafka's partitioner (and the worker's lane routing) hash the key's bytes, so only one
/// spelling of an id is accepted: lower-case and hyphenated, as `Uuid` prints it. Any other
/// spelling of the same id could send the order's events to two partitions, and two pods.
pub(super) fn key(key: Option<&[u8]>, order_id: Uuid) -> Result<(), Rejection> {
    let Some(key) = key else {
        return Err(Rejection::new(
            Reason::KeyMismatch,
            "message has no key; contract v1 requires key = order_id",
        ));
    };
    let mut canonical = Uuid::encode_buffer();
    if key
        == order_id
            .hyphenated()
            .encode_lower(&mut canonical)
            .as_bytes()
    {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::KeyMismatch,
            format!(
                "message key {} is not the order_id in its canonical form {order_id} \
                 (lower-case, hyphenated)",
                excerpt(&String::from_utf8_lossy(key))
            ),
        ))
    }
}

/// Checks every line and returns the sum of quantity x unit price.
fn items(items: &[LineItem]) -> Result<i64, Rejection> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return invalid(format!(
            "items must hold 1 to {MAX_ITEMS} lines, got {}",
            items.len()
        ));
    }
    let mut sum: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        text(&format_args!("items[{i}].sku"), &item.sku, MAX_SKU_CHARS)?;
        if item.quantity == 0 || item.quantity > MAX_QUANTITY {
            return invalid(format!(
                "items[{i}].quantity must be 1 to {MAX_QUANTITY}, got {}",
                item.quantity
            ));
        }
        if !(0..=MAX_UNIT_PRICE_MINOR).contains(&item.unit_price_minor) {
            return invalid(format!(
                "items[{i}].unit_price_minor must be 0 to {MAX_UNIT_PRICE_MINOR}, got {}",
                item.unit_price_minor
            ));
        }
        sum = i64::from(item.quantity)
            .checked_mul(item.unit_price_minor)
            .and_then(|line| sum.checked_add(line))
            .ok_or_else(|| Rejection::new(Reason::InvalidValue, "sum of the items overflows"))?;
    }
    Ok(sum)
}

/// `field` is only formatted when the value is refused: a valid event allocates nothing here.
pub(super) fn text(
    field: &dyn std::fmt::Display,
    value: &str,
    max_chars: usize,
) -> Result<(), Rejection> {
    // Printable ASCII (what ids and SKUs are) is counted and checked in one pass over bytes.
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let chars = if printable {
        value.len()
    } else {
        value.chars().count()
    };
    if chars == 0 || chars > max_chars {
        return invalid(format!(
            "{field} must be 1 to {max_chars} characters, got {chars}"
        ));
    }
    if !printable && value.chars().any(char::is_control) {
        return invalid(format!(
            "{field} {} contains control characters",
            excerpt(value)
        ));
    }
    Ok(())
}

pub(super) fn invalid<T>(detail: String) -> Result<T, Rejection> {
    Err(Rejection::new(Reason::InvalidValue, detail))
}

/// A producer's value quoted in a reason: escaped (no control bytes reach logs or the database)
/// and cut to a readable length.
pub(super) fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    let escaped = format!("{value:?}");
    if escaped.chars().count() <= MAX {
        escaped
    } else {
        let cut: String = escaped.chars().take(MAX).collect();
        format!("{cut}...")
    }
}
