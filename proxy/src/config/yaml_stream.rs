//! YAML events straight into the descriptor-driven decoder, without a JSON value tree between.
//!
//! The decoder asks for typed values (`deserialize_string` for a string field, ...), and YAML would
//! answer such a request with the text of any scalar (`name: 123` as the string "123"). The
//! canonical JSON mapping types scalars first, as the JSON tree did: every request is answered as
//! `deserialize_any` here, so a YAML scalar keeps its YAML type and a mistyped field is rejected with
//! the same message. Map keys are read as text, as the tree's object keys were; non-finite floats
//! read as null, as the tree held them.
//!
//! The decoder's own errors (with the field path tracked outside) pass through YAML's error type;
//! they are kept aside in a slot so that they come out as written, without YAML's position suffix.

use std::cell::Cell;
use std::fmt;

use serde::de::value::{
    BoolDeserializer, BorrowedStrDeserializer, F64Deserializer, I64Deserializer,
    MapAccessDeserializer, SeqAccessDeserializer, StrDeserializer, StringDeserializer,
    U64Deserializer,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// An error of the decoder, or of YAML (its syntax, a key that is not a scalar) rendered as text.
#[derive(Debug, Clone)]
pub struct StreamError {
    pub message: String,
    pub from_yaml: bool,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StreamError {}

impl de::Error for StreamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            message: msg.to_string(),
            from_yaml: false,
        }
    }
}

/// Where a decoder error waits while it crosses YAML's error type.
pub type Slot = Cell<Option<StreamError>>;

/// Hands a decoder error to YAML's side, keeping the original in the slot.
fn stash<E: de::Error>(slot: &Slot, e: StreamError) -> E {
    let out = E::custom(&e.message);
    slot.set(Some(e));
    out
}

/// Takes a YAML-side error back: the stashed decoder error when there is one.
fn unstash<E: fmt::Display>(slot: &Slot, e: E) -> StreamError {
    slot.take().unwrap_or_else(|| StreamError {
        message: e.to_string(),
        from_yaml: true,
    })
}

/// A YAML deserializer that answers every request as `deserialize_any`.
pub struct Typed<'s, D> {
    inner: D,
    slot: &'s Slot,
}

impl<'s, D> Typed<'s, D> {
    pub fn new(inner: D, slot: &'s Slot) -> Self {
        Self { inner, slot }
    }
}

macro_rules! forward_any {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, StreamError> {
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Typed<'_, D> {
    type Error = StreamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, StreamError> {
        let slot = self.slot;
        self.inner
            .deserialize_any(AnyVisitor { visitor, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, StreamError> {
        let slot = self.slot;
        self.inner
            .deserialize_any(OptionVisitor { visitor, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, StreamError> {
        let slot = self.slot;
        self.inner
            .deserialize_ignored_any(AnyVisitor { visitor, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, StreamError> {
        self.deserialize_any(visitor)
    }

    forward_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_i128 deserialize_u128
    }
}

/// Passes YAML's typed answer on, wrapping maps and sequences so their members stay typed.
struct AnyVisitor<'s, V> {
    visitor: V,
    slot: &'s Slot,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for AnyVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.visitor.visit_bool(v).map_err(|e| stash(self.slot, e))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        // The tree kept a non-negative integer as an unsigned one.
        let r = match u64::try_from(v) {
            Ok(u) => self.visitor.visit_u64(u),
            Err(_) => self.visitor.visit_i64(v),
        };
        r.map_err(|e| stash(self.slot, e))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.visitor.visit_u64(v).map_err(|e| stash(self.slot, e))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        let r = if v.is_finite() {
            self.visitor.visit_f64(v)
        } else {
            self.visitor.visit_unit()
        };
        r.map_err(|e| stash(self.slot, e))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.visitor.visit_str(v).map_err(|e| stash(self.slot, e))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.visitor
            .visit_borrowed_str(v)
            .map_err(|e| stash(self.slot, e))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.visitor
            .visit_string(v)
            .map_err(|e| stash(self.slot, e))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit().map_err(|e| stash(self.slot, e))
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit().map_err(|e| stash(self.slot, e))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        Typed::new(d, slot)
            .deserialize_any(self.visitor)
            .map_err(|e| stash(slot, e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.visitor
            .visit_seq(TypedSeq { inner: seq, slot })
            .map_err(|e| stash(slot, e))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.visitor
            .visit_map(TypedMap { inner: map, slot })
            .map_err(|e| stash(slot, e))
    }
}

/// `deserialize_option` as the tree answered it: null is none, anything else is some.
struct OptionVisitor<'s, V> {
    visitor: V,
    slot: &'s Slot,
}

impl<'de, V: Visitor<'de>> OptionVisitor<'_, V> {
    fn some<E: de::Error, D: Deserializer<'de, Error = StreamError>>(
        self,
        d: D,
    ) -> Result<V::Value, E> {
        self.visitor.visit_some(d).map_err(|e| stash(self.slot, e))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OptionVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.some(BoolDeserializer::new(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        match u64::try_from(v) {
            Ok(u) => self.some(U64Deserializer::new(u)),
            Err(_) => self.some(I64Deserializer::new(v)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.some(U64Deserializer::new(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        if v.is_finite() {
            self.some(F64Deserializer::new(v))
        } else {
            self.visit_unit()
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.some(StrDeserializer::new(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.some(BorrowedStrDeserializer::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.some(StringDeserializer::new(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none().map_err(|e| stash(self.slot, e))
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        Typed::new(d, slot)
            .deserialize_option(self.visitor)
            .map_err(|e| stash(slot, e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.some(SeqAccessDeserializer::new(TypedSeq { inner: seq, slot }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.some(MapAccessDeserializer::new(TypedMap { inner: map, slot }))
    }
}

struct TypedSeq<'s, A> {
    inner: A,
    slot: &'s Slot,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for TypedSeq<'_, A> {
    type Error = StreamError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, StreamError> {
        let slot = self.slot;
        self.inner
            .next_element_seed(TypedSeed { seed, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct TypedMap<'s, A> {
    inner: A,
    slot: &'s Slot,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TypedMap<'_, A> {
    type Error = StreamError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, StreamError> {
        let slot = self.slot;
        self.inner
            .next_key_seed(KeySeed { seed, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, StreamError> {
        let slot = self.slot;
        self.inner
            .next_value_seed(TypedSeed { seed, slot })
            .map_err(|e| unstash(slot, e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A member: the caller's seed over a typed deserializer.
struct TypedSeed<'s, T> {
    seed: T,
    slot: &'s Slot,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for TypedSeed<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        let slot = self.slot;
        self.seed
            .deserialize(Typed::new(d, slot))
            .map_err(|e| stash(slot, e))
    }
}

/// A map key: read as text (the tree's object keys were strings), then handed on as a string.
struct KeySeed<'s, K> {
    seed: K,
    slot: &'s Slot,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        let key = <String as serde::Deserialize>::deserialize(d)?;
        self.seed
            .deserialize(StringDeserializer::<StreamError>::new(key))
            .map_err(|e| stash(self.slot, e))
    }
}
