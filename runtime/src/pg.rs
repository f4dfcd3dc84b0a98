//! Bind values the generated writes hand to diesel.

use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{Array, HasSqlType, Nullable, Text};
use std::io::Write as _;

/// A `text[]` bind in PostgreSQL's binary array format, its elements encoded as the array is
/// built. diesel's own array bind encodes each element into a scratch buffer and copies it
/// again, two small copies per value; a batch of line items binds thousands of values.
#[derive(Debug, Clone, Default)]
pub struct TextArray {
    len: i32,
    /// Each element: its length (big-endian `i32`, -1 for NULL) and its bytes.
    elements: Vec<u8>,
}

impl TextArray {
    /// The array of `items` (`&str`, or `Option<&str>` where `None` is NULL).
    ///
    /// # Panics
    /// If an element or the array is longer than PostgreSQL allows (`i32::MAX`); the batch
    /// byte budget keeps both far below.
    pub fn new<'a, I>(items: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Option<&'a str>>,
    {
        let items = items.into_iter();
        let mut array = Self {
            len: 0,
            elements: Vec::with_capacity(items.size_hint().0 * 16),
        };
        for item in items {
            match item.into() {
                Some(text) => {
                    let len = i32::try_from(text.len()).expect("text longer than 2 GiB");
                    array.elements.extend_from_slice(&len.to_be_bytes());
                    array.elements.extend_from_slice(text.as_bytes());
                }
                None => array.elements.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            array.len = array
                .len
                .checked_add(1)
                .expect("more than i32::MAX elements");
        }
        array
    }

    /// How many elements the array has.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn write(&self, out: &mut Output<'_, '_, Pg>) -> serialize::Result {
        // The header diesel writes: one dimension, no flags, the element type, its length and
        // lower bound 1 (PostgreSQL's `array_recv`).
        let oid = <Pg as HasSqlType<Text>>::metadata(out.metadata_lookup()).oid()?;
        out.write_all(&1i32.to_be_bytes())?;
        out.write_all(&0i32.to_be_bytes())?;
        out.write_all(&oid.to_be_bytes())?;
        out.write_all(&self.len.to_be_bytes())?;
        out.write_all(&1i32.to_be_bytes())?;
        out.write_all(&self.elements)?;
        Ok(IsNull::No)
    }
}

impl ToSql<Array<Text>, Pg> for TextArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        self.write(out)
    }
}

impl ToSql<Array<Nullable<Text>>, Pg> for TextArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        self.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_length_prefixed_and_null_is_minus_one() {
        let array = TextArray::new([Some("ab"), None, Some("")]);
        assert_eq!(array.len(), 3);
        assert_eq!(
            array.elements,
            [&[0, 0, 0, 2, b'a', b'b'][..], &[255; 4], &[0; 4]].concat()
        );
        assert!(TextArray::new(Vec::<&str>::new()).is_empty());
    }
}
