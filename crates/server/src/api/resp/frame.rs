//! The request parser: pure, incremental, and bounded (BAD-INPUT rows 1-8).
//!
//! A request is either a RESP array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every
//! client library sends) or an inline command (`GET k\r\n`, what a human types into telnet). The
//! parser does no IO: it is handed the bytes received so far and answers
//! [`Status::Complete`] (with the command's length, its arguments available as [`Span`]s into the
//! same bytes), [`Status::Incomplete`] (call again once more bytes arrived, with the same buffer
//! start), or a [`ProtocolError`] (answer it, then close the connection, as Redis does).
//!
//! Incremental means resumable, not "start over": the parser keeps how far it got (arguments
//! already parsed, where the search for a line end stopped), so a command dribbled one byte at a
//! time costs linear work, not quadratic.
//!
//! Bounds, all checked before anything is trusted:
//! - a length the peer claims is only ever compared, never allocated: the connection's buffer
//!   grows with bytes actually received;
//! - argument count ([`Limits::max_args`]), bulk length ([`Limits::max_bulk`]: the largest value
//!   the node can be configured to accept plus room, so an oversized-but-plausible value parses and
//!   then gets the node's clear "value too large"), whole command ([`Limits::max_command`]), and
//!   line length ([`Limits::max_line`]) for inline commands and `*`/`$` headers;
//! - lengths are parsed strictly (digits only, optional `-`, no `+`, no spaces, no leading zeros,
//!   no overflow); `*0` and `*-1` are empty commands and ignored, as Redis does; any other
//!   negative length is an error;
//! - requests are flat: an element that is not a `$` bulk (a nested `*` array, `+OK`, `:1`) is
//!   an error, so there is no recursion to bound;
//! - a bulk payload must be followed by CRLF, so a payload shorter or longer than declared is an
//!   error and its bytes are never read as a command.
//!
//! IMPLEMENTATION CAVEATS: inline commands are split on ASCII whitespace only; Redis's quoting
//! (`SET k "a b"`) is not supported (use a client library, or redis-cli, for values with spaces).

use std::fmt;

/// Most arguments in one command (the command name included).
pub const MAX_ARGS: usize = 16 * 1024;
/// Longest bulk string: the node's ceiling for values (1 MiB) plus 1 KiB for the key and slack.
pub const MAX_BULK: usize = 1024 * 1024 + 1024;
/// Largest whole command, in declared bytes.
pub const MAX_COMMAND: usize = 64 * 1024 * 1024;
/// Longest inline command or `*`/`$` header line before it must end.
pub const MAX_LINE: usize = 64 * 1024;

/// Bounds a [`Parser`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_args: usize,
    pub max_bulk: usize,
    pub max_command: usize,
    pub max_line: usize,
}

impl Limits {
    /// For authenticated clients (or when no password is set).
    pub const DEFAULT: Limits = Limits {
        max_args: MAX_ARGS,
        max_bulk: MAX_BULK,
        max_command: MAX_COMMAND,
        max_line: MAX_LINE,
    };

    /// Before `AUTH` succeeds on a node with a password, a stranger gets no more than `HELLO 3
    /// AUTH user pass SETNAME name` needs (Redis applies the same 10 arguments and 16 KiB).
    pub const UNAUTHENTICATED: Limits = Limits {
        max_args: 10,
        max_bulk: 16 * 1024,
        max_command: 64 * 1024,
        max_line: MAX_LINE,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Where one argument lies in the buffer handed to [`Parser::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The outcome of one [`Parser::parse`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A whole command of this many bytes is at the start of the buffer; its arguments are in
    /// [`Parser::args`] (none for an empty command: `*0`, `*-1`, or a blank inline line).
    Complete(usize),
    /// More bytes are needed. Call again with the same buffer start once they arrived.
    Incomplete,
}

/// A request that breaks the protocol. The connection answers `-ERR <this>` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    InvalidMultibulkLength,
    InvalidBulkLength,
    /// An array element that is not a bulk string (nested array, simple string, integer...).
    ExpectedBulk(u8),
    /// A bulk payload not followed by CRLF: shorter or longer than its declared length.
    MissingCrlf,
    InlineTooLong,
    MultibulkHeaderTooLong,
    BulkHeaderTooLong,
    CommandTooLarge,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedBulk(b) if b.is_ascii_graphic() => {
                write!(f, "expected '$', got '{}'", *b as char)
            }
            ProtocolError::ExpectedBulk(b) => write!(f, "expected '$', got '\\x{b:02x}'"),
            ProtocolError::MissingCrlf => {
                f.write_str("bulk payload not followed by CRLF (shorter or longer than declared)")
            }
            ProtocolError::InlineTooLong => f.write_str("too big inline request"),
            ProtocolError::MultibulkHeaderTooLong => f.write_str("too big mbulk count string"),
            ProtocolError::BulkHeaderTooLong => f.write_str("too big bulk count string"),
            ProtocolError::CommandTooLarge => {
                write!(f, "command too large (over {} MiB)", MAX_COMMAND >> 20)
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a command.
    Start,
    /// Inside an array; `remaining` bulks still to come, the next `$` header at `pos`.
    Header { remaining: usize },
    /// A `$len` header was read; the payload starts at `pos`.
    Payload { remaining: usize, len: usize },
}

/// An incremental parser of one connection's requests. Reuse it for the connection's life: its
/// argument list is allocated once.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: State,
    /// Next byte to look at, relative to the start of the current command.
    pos: usize,
    /// Where the search for the current line's end resumes (bytes before it hold no line end).
    scan: usize,
    args: Vec<Span>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(Limits::DEFAULT)
    }
}

impl Parser {
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            state: State::Start,
            pos: 0,
            scan: 0,
            args: Vec::new(),
        }
    }

    /// Changes the bounds; takes effect at the next command.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The arguments of the command last reported [`Status::Complete`].
    pub fn args(&self) -> &[Span] {
        &self.args
    }

    /// Parses the command at the start of `buf`. After `Incomplete`, call again with a buffer
    /// that starts at the same byte (and holds more); after `Complete(n)`, with one that starts
    /// `n` bytes further. After an error the parser's state is meaningless: close the connection.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Status, ProtocolError> {
        loop {
            match self.state {
                State::Start => {
                    self.args.clear();
                    let Some(&first) = buf.first() else {
                        return Ok(Status::Incomplete);
                    };
                    if first != b'*' {
                        return self.parse_inline(buf);
                    }
                    let Some(line_end) =
                        self.find_cr(buf, 1, ProtocolError::MultibulkHeaderTooLong)?
                    else {
                        return Ok(Status::Incomplete);
                    };
                    let Some(after) =
                        header_end(buf, line_end, ProtocolError::InvalidMultibulkLength)?
                    else {
                        return Ok(Status::Incomplete);
                    };
                    let count = parse_len(&buf[1..line_end])
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    match count {
                        // Redis ignores empty and null arrays: an empty command.
                        0 | -1 => return Ok(self.complete(after)),
                        n if n < 0 || n as u64 > self.limits.max_args as u64 => {
                            return Err(ProtocolError::InvalidMultibulkLength)
                        }
                        n => {
                            self.state = State::Header {
                                remaining: n as usize,
                            };
                            self.pos = after;
                            self.scan = after;
                        }
                    }
                }
                State::Header { remaining: 0 } => return Ok(self.complete(self.pos)),
                State::Header { remaining } => {
                    let Some(&marker) = buf.get(self.pos) else {
                        return Ok(Status::Incomplete);
                    };
                    if marker != b'$' {
                        return Err(ProtocolError::ExpectedBulk(marker));
                    }
                    let Some(line_end) =
                        self.find_cr(buf, self.pos + 1, ProtocolError::BulkHeaderTooLong)?
                    else {
                        return Ok(Status::Incomplete);
                    };
                    let Some(start) = header_end(buf, line_end, ProtocolError::InvalidBulkLength)?
                    else {
                        return Ok(Status::Incomplete);
                    };
                    let len = match parse_len(&buf[self.pos + 1..line_end]) {
                        Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk as u64 => n as usize,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    // Both terms are bounded (64 MiB-ish and 1 MiB-ish): no overflow.
                    if start + len + 2 > self.limits.max_command {
                        return Err(ProtocolError::CommandTooLarge);
                    }
                    self.state = State::Payload { remaining, len };
                    self.pos = start;
                }
                State::Payload { remaining, len } => {
                    let end = self.pos + len;
                    // Fail as soon as a wrong byte is visible, not only once all arrived.
                    match buf.get(end..) {
                        Some([b'\r', b'\n', ..]) => {}
                        Some([b'\r']) | Some([]) | None => return Ok(Status::Incomplete),
                        Some(_) => return Err(ProtocolError::MissingCrlf),
                    }
                    self.args.push(Span {
                        start: self.pos,
                        end,
                    });
                    self.pos = end + 2;
                    self.scan = self.pos;
                    self.state = State::Header {
                        remaining: remaining - 1,
                    };
                }
            }
        }
    }

    fn complete(&mut self, len: usize) -> Status {
        self.state = State::Start;
        self.pos = 0;
        self.scan = 0;
        Status::Complete(len)
    }

    /// Finds the `\r` ending the line that starts at `from`, resuming where the last search
    /// stopped. `None` = not there yet; an error once the line is longer than allowed.
    fn find_cr(
        &mut self,
        buf: &[u8],
        from: usize,
        too_long: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let begin = self.scan.max(from);
        let limit = (from + self.limits.max_line).min(buf.len());
        if begin < limit {
            if let Some(i) = buf[begin..limit].iter().position(|&b| b == b'\r') {
                return Ok(Some(begin + i));
            }
        }
        if buf.len() - from >= self.limits.max_line {
            return Err(too_long);
        }
        self.scan = buf.len();
        Ok(None)
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Result<Status, ProtocolError> {
        let begin = self.scan;
        let limit = self.limits.max_line.min(buf.len());
        let newline = if begin < limit {
            buf[begin..limit]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| begin + i)
        } else {
            None
        };
        let Some(newline) = newline else {
            if buf.len() >= self.limits.max_line {
                return Err(ProtocolError::InlineTooLong);
            }
            self.scan = buf.len();
            return Ok(Status::Incomplete);
        };
        let line = &buf[..newline];
        let mut i = 0;
        while i < line.len() {
            if is_space(line[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < line.len() && !is_space(line[i]) {
                i += 1;
            }
            if self.args.len() == self.limits.max_args {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            self.args.push(Span { start, end: i });
        }
        Ok(self.complete(newline + 1))
    }
}

/// After a header's `\r` at `cr`: the offset past its `\n`, `None` if not yet received, an error
/// if something else follows the `\r`.
fn header_end(
    buf: &[u8],
    cr: usize,
    invalid: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(cr + 2)),
        Some(_) => Err(invalid),
    }
}

/// Redis's whitespace for inline commands (`isspace`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// A strict decimal length: optional `-`, then digits without leading zeros (`0` alone is fine),
/// no `+`, no spaces, no overflow. Redis's `string2ll` rules.
pub fn parse_len(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as i64)?;
    }
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed command's arguments and length.
    type Parsed = (Vec<Vec<u8>>, usize);

    /// Parses one command from `input`.
    fn parse_one(input: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
        let mut p = Parser::default();
        Ok(match p.parse(input)? {
            Status::Complete(n) => Some((
                p.args()
                    .iter()
                    .map(|s| input[s.start..s.end].to_vec())
                    .collect(),
                n,
            )),
            Status::Incomplete => None,
        })
    }

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_an_array_of_bulks() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let (a, n) = parse_one(input).unwrap().unwrap();
        assert_eq!(a, args(&["SET", "key", "value"]));
        assert_eq!(n, input.len());
    }

    #[test]
    fn bulks_are_binary_safe() {
        let input = b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\xff\r\n";
        let (a, _) = parse_one(input).unwrap().unwrap();
        assert_eq!(a[1], b"\r\n\0\xff");
        let input = b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n";
        assert_eq!(parse_one(input).unwrap().unwrap().0[1], b"");
    }

    #[test]
    fn incomplete_at_every_split_point_then_complete() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$10\r\n0123456789\r\n";
        for split in 0..input.len() {
            // Fresh parser fed a prefix, then the whole: exercises resumption at every byte.
            let mut p = Parser::default();
            assert_eq!(
                p.parse(&input[..split]),
                Ok(Status::Incomplete),
                "split {split}"
            );
            assert_eq!(
                p.parse(input),
                Ok(Status::Complete(input.len())),
                "split {split}"
            );
            let a: Vec<&[u8]> = p.args().iter().map(|s| &input[s.start..s.end]).collect();
            assert_eq!(a, vec![&b"SET"[..], b"k\r\n", b"0123456789"]);
        }
        // One byte at a time.
        let mut p = Parser::default();
        for end in 0..input.len() {
            assert_eq!(p.parse(&input[..end]), Ok(Status::Incomplete));
        }
        assert_eq!(p.parse(input), Ok(Status::Complete(input.len())));
    }

    #[test]
    fn inline_incomplete_at_every_split_point() {
        let input: &[u8] = b"SET  key\tvalue\r\n";
        for split in 0..input.len() {
            let mut p = Parser::default();
            assert_eq!(
                p.parse(&input[..split]),
                Ok(Status::Incomplete),
                "split {split}"
            );
            assert_eq!(p.parse(input), Ok(Status::Complete(input.len())));
            assert_eq!(p.args().len(), 3);
        }
    }

    #[test]
    fn pipelined_commands_parse_one_after_another() {
        let input = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*2\r\n$3\r\nGET";
        let mut p = Parser::default();
        let mut at = 0;
        let mut names = Vec::new();
        while let Status::Complete(n) = p.parse(&input[at..]).unwrap() {
            let s = p.args()[0];
            names.push(input[at + s.start..at + s.end].to_vec());
            at += n;
        }
        assert_eq!(names, args(&["PING", "PING", "ECHO"]));
        assert_eq!(&input[at..], b"*2\r\n$3\r\nGET");
    }

    #[test]
    fn inline_commands() {
        let (a, n) = parse_one(b"set  foo\tbar\r\nrest").unwrap().unwrap();
        assert_eq!(a, args(&["set", "foo", "bar"]));
        assert_eq!(n, 14);
        // A bare \n ends the line too (telnet, nc).
        let (a, n) = parse_one(b"PING\n").unwrap().unwrap();
        assert_eq!((a, n), (args(&["PING"]), 5));
        // A blank line is an empty command.
        let (a, n) = parse_one(b"\r\n").unwrap().unwrap();
        assert_eq!((a.len(), n), (0, 2));
        let (a, _) = parse_one(b"   \t \r\n").unwrap().unwrap();
        assert!(a.is_empty());
    }

    #[test]
    fn empty_and_null_arrays_are_ignored() {
        assert_eq!(parse_one(b"*0\r\n").unwrap().unwrap(), (vec![], 4));
        assert_eq!(parse_one(b"*-1\r\n").unwrap().unwrap(), (vec![], 5));
    }

    // BAD-INPUT 1: a bulk length over the limit, nothing allocated for it.
    #[test]
    fn bulk_length_over_the_limit() {
        assert_eq!(
            parse_one(b"*2\r\n$3\r\nSET\r\n$600000000\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        // The limit itself parses (waits for the payload).
        let at_limit = format!("*2\r\n$3\r\nSET\r\n${MAX_BULK}\r\n");
        assert_eq!(parse_one(at_limit.as_bytes()), Ok(None));
        let over = format!("*2\r\n$3\r\nSET\r\n${}\r\n", MAX_BULK + 1);
        assert_eq!(
            parse_one(over.as_bytes()),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
    }

    // BAD-INPUT 2: an array count over the limit.
    #[test]
    fn array_count_over_the_limit() {
        assert_eq!(
            parse_one(b"*2000000\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let over = format!("*{}\r\n", MAX_ARGS + 1);
        assert_eq!(
            parse_one(over.as_bytes()),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let at = format!("*{MAX_ARGS}\r\n");
        assert_eq!(parse_one(at.as_bytes()), Ok(None));
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
    }

    // BAD-INPUT 3: negative lengths.
    #[test]
    fn negative_lengths() {
        assert_eq!(
            parse_one(b"*1\r\n$-5\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_one(b"*1\r\n$-1\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_one(b"*-3\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    // BAD-INPUT 4: garbage or overflowing lengths.
    #[test]
    fn garbage_lengths() {
        for bad in [
            &b"$99999999999999999999"[..],
            b"$12a",
            b"$+5",
            b"$ 5",
            b"$5 ",
            b"$",
            b"$05",
            b"$-0",
            b"$0x5",
        ] {
            let mut input = b"*1\r\n".to_vec();
            input.extend_from_slice(bad);
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                parse_one(&input),
                Err(ProtocolError::InvalidBulkLength),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [&b"*99999999999999999999"[..], b"*1a", b"*+1", b"* 1", b"*"] {
            let mut input = bad.to_vec();
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                parse_one(&input),
                Err(ProtocolError::InvalidMultibulkLength)
            );
        }
        // A header's CR must be followed by LF.
        assert_eq!(
            parse_one(b"*1\rX"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_one(b"*1\r\n$1\rX"),
            Err(ProtocolError::InvalidBulkLength)
        );
    }

    #[test]
    fn strict_integer_parsing() {
        assert_eq!(parse_len(b"0"), Some(0));
        assert_eq!(parse_len(b"123"), Some(123));
        assert_eq!(parse_len(b"-1"), Some(-1));
        assert_eq!(parse_len(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_len(b"9223372036854775808"), None);
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"1.0",
            b"\xff",
        ] {
            assert_eq!(parse_len(bad), None);
        }
    }

    // BAD-INPUT 5: payload shorter or longer than declared, or no CRLF after it.
    #[test]
    fn payload_length_mismatch() {
        // Longer: the byte after the declared payload is not CR.
        assert_eq!(
            parse_one(b"*1\r\n$3\r\nabcd\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        // Shorter, with a following command whose bytes must not be read as one.
        assert_eq!(
            parse_one(b"*1\r\n$5\r\nabc\r\n*1\r\n$4\r\nPING\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        // CR then not LF.
        assert_eq!(
            parse_one(b"*1\r\n$3\r\nabc\rX"),
            Err(ProtocolError::MissingCrlf)
        );
        // Shorter and nothing else yet: just incomplete.
        assert_eq!(parse_one(b"*1\r\n$5\r\nabc\r\n"), Ok(None));
    }

    // BAD-INPUT 6: a line that never ends.
    #[test]
    fn endless_lines() {
        let inline = vec![b'a'; MAX_LINE - 1];
        assert_eq!(parse_one(&inline), Ok(None));
        let inline = vec![b'a'; MAX_LINE];
        assert_eq!(parse_one(&inline), Err(ProtocolError::InlineTooLong));
        let mut header = b"*1\r\n$".to_vec();
        header.extend(std::iter::repeat_n(b'1', MAX_LINE + 10));
        assert_eq!(parse_one(&header), Err(ProtocolError::BulkHeaderTooLong));
        let mut header = b"*".to_vec();
        header.extend(std::iter::repeat_n(b'1', MAX_LINE + 10));
        assert_eq!(
            parse_one(&header),
            Err(ProtocolError::MultibulkHeaderTooLong)
        );
        // Fed in pieces, the same: the resumed search still counts from the line's start.
        let mut p = Parser::default();
        let big = vec![b'x'; MAX_LINE + 1];
        let mut result = Ok(Status::Incomplete);
        for end in (0..=big.len()).step_by(1000).chain([big.len()]) {
            result = p.parse(&big[..end]);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtocolError::InlineTooLong));
    }

    // BAD-INPUT 7 and 8: nested aggregates and other markers where a bulk is expected.
    #[test]
    fn nested_arrays_and_wrong_markers() {
        assert_eq!(
            parse_one(b"*1\r\n*1\r\n$4\r\nPING\r\n"),
            Err(ProtocolError::ExpectedBulk(b'*'))
        );
        assert_eq!(
            parse_one(b"*1\r\n+OK\r\n"),
            Err(ProtocolError::ExpectedBulk(b'+'))
        );
        assert_eq!(
            parse_one(b"*1\r\n:1\r\n"),
            Err(ProtocolError::ExpectedBulk(b':'))
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'+').to_string(),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(0).to_string(),
            "Protocol error: expected '$', got '\\x00'"
        );
        // Deep nesting is refused at the first level: no recursion.
        let deep = b"*1\r\n".repeat(100_000);
        assert_eq!(parse_one(&deep), Err(ProtocolError::ExpectedBulk(b'*')));
    }

    #[test]
    fn whole_command_size_is_capped() {
        // 64 arguments of MAX_BULK each pass the per-bulk check but not the total.
        let mut input = b"*100\r\n".to_vec();
        let mut p = Parser::default();
        let mut err = None;
        for _ in 0..100 {
            input.extend_from_slice(format!("${MAX_BULK}\r\n").as_bytes());
            match p.parse(&input) {
                Ok(Status::Incomplete) => {}
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            // Pretend the payload arrived (its bytes are not inspected until its end).
            input.resize(input.len() + MAX_BULK, b'v');
            input.extend_from_slice(b"\r\n");
        }
        assert_eq!(err, Some(ProtocolError::CommandTooLarge));
    }

    #[test]
    fn unauthenticated_limits_are_tighter() {
        let mut p = Parser::new(Limits::UNAUTHENTICATED);
        assert_eq!(
            p.parse(b"*11\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let mut p = Parser::new(Limits::UNAUTHENTICATED);
        assert_eq!(
            p.parse(b"*2\r\n$4\r\nAUTH\r\n$20000\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        let mut p = Parser::new(Limits::UNAUTHENTICATED);
        assert_eq!(
            p.parse(b"a b c d e f g h i j k\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }
}
