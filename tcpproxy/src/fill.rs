//! What one read into a direction's buffer gave, whichever kind of buffer (memory or pipe) took
//! it: its own module so that the buffer and the pipe both name it without importing each other.

/// What one attempt to read from the source gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Bytes were read (how many does not matter to the relay: `buffered` says what is held).
    Data,
    /// The source sent EOF.
    Eof,
    /// The buffer took nothing although the count says it has room: a pipe's slots can fill
    /// before its bytes do. Reading waits until the buffer has been written out.
    Full,
}
