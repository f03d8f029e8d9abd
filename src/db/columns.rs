//! A batch's columns encoded as PostgreSQL arrays straight from its rows.
//!
//! Invariant: a [`Column`] puts on the wire exactly what a `Vec` of the same values would
//! (PostgreSQL's binary array: one dimension, lower bound 1, each element length-prefixed, NULL
//! as length -1), without building that `Vec`: a batch's parameters cost the one buffer they are
//! sent from, not a vector per column besides it.

use std::marker::PhantomData;

use serde::Serialize;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Postgres, Type};

use crate::contract::OrderEvent;

/// The array of `value(row)` for every row, in row order.
pub(super) struct Column<'r, R, T, F> {
    rows: &'r [R],
    value: F,
    element: PhantomData<fn() -> T>,
}

pub(super) fn column<'r, R, T, F>(rows: &'r [R], value: F) -> Column<'r, R, T, F>
where
    F: Fn(&'r R) -> T,
{
    Column {
        rows,
        value,
        element: PhantomData,
    }
}

impl<R, T: PgHasArrayType, F> Type<Postgres> for Column<'_, R, T, F> {
    fn type_info() -> PgTypeInfo {
        T::array_type_info()
    }
}

impl<'q, 'r, R, T, F> Encode<'q, Postgres> for Column<'r, R, T, F>
where
    F: Fn(&'r R) -> T,
    T: Encode<'q, Postgres> + Type<Postgres>,
{
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let element = T::type_info()
            .oid()
            .ok_or("a batch column's element type has no fixed OID")?;
        let len = i32::try_from(self.rows.len())?;
        buf.extend_from_slice(&1_i32.to_be_bytes()); // dimensions
        buf.extend_from_slice(&0_i32.to_be_bytes()); // flags (the server works out NULLs)
        buf.extend_from_slice(&element.0.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&1_i32.to_be_bytes()); // lower bound
        for row in self.rows {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            let size = match (self.value)(row).encode_by_ref(buf)? {
                IsNull::No => i32::try_from(buf.len() - at - 4)?,
                IsNull::Yes => -1,
            };
            buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        Ok(IsNull::No)
    }
}

/// An order's items as JSON text (cast to `jsonb` by the statement), written into the buffer
/// the statement is sent from.
pub(super) struct ItemsJson<'a>(pub &'a OrderEvent);

/// A value serialized as JSON text; `None` for SQL NULL.
pub(super) struct JsonText<'a, T>(pub Option<&'a T>);

impl Encode<'_, Postgres> for ItemsJson<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        self.0.write_items_json(buf);
        Ok(IsNull::No)
    }
}

impl<T: Serialize> Encode<'_, Postgres> for JsonText<'_, T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self.0 {
            Some(value) => {
                serde_json::to_writer(&mut **buf, value)?;
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
}

/// Text on the wire, as `&str` is.
fn text() -> PgTypeInfo {
    <&str as Type<Postgres>>::type_info()
}

fn text_array() -> PgTypeInfo {
    <&str as PgHasArrayType>::array_type_info()
}

impl Type<Postgres> for ItemsJson<'_> {
    fn type_info() -> PgTypeInfo {
        text()
    }
}

impl PgHasArrayType for ItemsJson<'_> {
    fn array_type_info() -> PgTypeInfo {
        text_array()
    }
}

impl<T> Type<Postgres> for JsonText<'_, T> {
    fn type_info() -> PgTypeInfo {
        text()
    }
}

impl<T> PgHasArrayType for JsonText<'_, T> {
    fn array_type_info() -> PgTypeInfo {
        text_array()
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Arguments;
    use sqlx::postgres::PgArguments;

    use super::*;

    fn encoded<'q>(value: impl Encode<'q, Postgres> + Type<Postgres> + 'q) -> String {
        let mut args = PgArguments::default();
        args.add(value).expect("encodes");
        format!("{args:?}")
    }

    #[test]
    fn a_column_encodes_what_a_vector_of_its_values_encodes() {
        let rows = [(1_i64, Some("a")), (2, None), (3, Some("ccc"))];
        assert_eq!(encoded(column(&rows, |r| r.0)), encoded(vec![1_i64, 2, 3]));
        assert_eq!(
            encoded(column(&rows, |r| r.1)),
            encoded(vec![Some("a"), None, Some("ccc")])
        );
        let none: [(i64, Option<&str>); 0] = [];
        assert_eq!(
            encoded(column(&none, |r| r.1)),
            encoded(Vec::<Option<&str>>::new())
        );
    }

    #[test]
    fn json_text_is_null_for_none_and_the_serialized_value_otherwise() {
        let value = serde_json::json!({"a": 1});
        let rows = [Some(&value), None];
        assert_eq!(
            encoded(column(&rows, |r| JsonText(*r))),
            encoded(vec![Some(r#"{"a":1}"#), None])
        );
    }
}
