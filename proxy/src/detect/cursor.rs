//! Detect, byte cursor: bounds-checked reads over peeked bytes, so a parser of untrusted input
//! cannot index out of range; every read answers `None` when the bytes run out.

#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A vector with a one-byte length prefix, as its own cursor.
    pub(super) fn vec8(&mut self) -> Option<Cursor<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Cursor::new)
    }

    /// A vector with a two-byte length prefix, as its own cursor.
    pub(super) fn vec16(&mut self) -> Option<Cursor<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Cursor::new)
    }

    pub(super) fn rest(self) -> &'a [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_big_endian_and_stop_at_the_end() {
        let mut c = Cursor::new(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(c.u8(), Some(1));
        assert_eq!(c.u24(), Some(0x020304));
        assert_eq!(c.u24(), None, "only two bytes are left");
        assert_eq!(c.remaining(), 2, "a failed read consumes nothing");
        assert_eq!(c.u16(), Some(0x0506));
        assert!(c.is_empty());
        assert_eq!(c.u8(), None);
    }

    #[test]
    fn length_prefixed_vectors_must_fit() {
        let mut c = Cursor::new(&[2, 9, 8, 7]);
        let inner = c.vec8().expect("two bytes fit");
        assert_eq!(inner.rest(), &[9, 8]);
        assert_eq!(c.rest(), &[7]);
        assert!(Cursor::new(&[0, 5, 1, 2]).vec16().is_none());
    }
}
