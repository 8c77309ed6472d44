//! What accounting reads from an answer passed on unchanged (its usage and
//! finish reason), read in one pass over the bytes.
//!
//! serde_json's derived reader spent ~14k instructions on a 750-byte chat
//! completion, more per member name and visitor than per byte; this reader
//! walks the text once, eight bytes at a time inside strings
//! ([`crate::json_text`]), and compares names as bytes.
//!
//! It answers only where serde_json would read the same body into the same
//! [`AnswerHead`], and is at least as strict: whatever serde rejects, it
//! rejects. Where matching serde would take more than a byte comparison (a
//! name or a read string with escapes, a count that is not a plain
//! integer, nesting deeper than 128) it gives up with [`Unsure`], and the
//! caller reads the body with serde. `skim_tests.rs` compares the two on
//! the golden answers, their mutations and edge cases.
use super::usage::Counts;

/// What accounting reads from an answer passed on unchanged; serde skips
/// everything else without building it.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
pub struct AnswerHead {
    #[serde(default)]
    pub usage: Option<Counts>,
    /// Anthropic.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// OpenAI.
    #[serde(default)]
    pub choices: Vec<ChoiceHead>,
}

#[derive(Debug, Default, PartialEq, serde::Deserialize)]
pub struct ChoiceHead {
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl AnswerHead {
    /// The head of an answer: read here when that is certain to give what
    /// serde gives, else by serde; `None` when the body is not one.
    pub fn read(body: &[u8]) -> Option<AnswerHead> {
        skim(body)
            .ok()
            .or_else(|| serde_json::from_slice(body).ok())
    }
}

/// The reader gave up: the body may be fine, but serde has to say.
#[derive(Debug)]
pub struct Unsure;

pub type Skim<T> = Result<T, Unsure>;

/// [`AnswerHead`] as serde's derived reader reads it: a top-level object,
/// each known member at most once (serde refuses a repeated one),
/// `choices` an array of objects, the reasons strings or null.
pub fn skim(body: &[u8]) -> Skim<AnswerHead> {
    let mut c = Cursor::new(body);
    let mut head = AnswerHead::default();
    let mut seen = [false; 3];
    c.object(|c, name| {
        match name {
            b"usage" => {
                once(&mut seen[0])?;
                head.usage = match c.null()? {
                    true => None,
                    false => Some(Counts::skim(c)?),
                };
            }
            b"stop_reason" => {
                once(&mut seen[1])?;
                head.stop_reason = c.reason()?;
            }
            b"choices" => {
                once(&mut seen[2])?;
                c.array(|c| {
                    head.choices.push(choice(c)?);
                    Ok(())
                })?;
            }
            _ => c.skip()?,
        }
        Ok(())
    })?;
    c.end()?;
    Ok(head)
}

/// One element of `choices`. serde's derived reader would also take an
/// array (its fields by position); that case is left to it.
fn choice(c: &mut Cursor<'_>) -> Skim<ChoiceHead> {
    let mut out = ChoiceHead::default();
    let mut seen = false;
    c.object(|c, name| {
        if name == b"finish_reason" {
            once(&mut seen)?;
            out.finish_reason = c.reason()?;
        } else {
            c.skip()?;
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn once(seen: &mut bool) -> Skim<()> {
    if std::mem::replace(seen, true) {
        return Err(Unsure);
    }
    Ok(())
}

/// A value in a place serde reads with `deserialize_any` into a lenient
/// type (`usage::Counts` and its parts): what decides the result.
pub enum Loose {
    /// A plain non-negative integer (serde gives it exactly).
    Int(u64),
    /// An object, not yet read: the cursor is at its `{`.
    Object,
    /// Anything else, read and checked: the type's default.
    Other,
}

/// A position in a JSON text.
pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// At the start of `body`.
    pub fn new(body: &'a [u8]) -> Cursor<'a> {
        Cursor { b: body, i: 0 }
    }

    /// The next byte after JSON whitespace, not taken.
    fn peek(&mut self) -> Skim<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
        self.b.get(self.i).copied().ok_or(Unsure)
    }

    fn eat(&mut self, byte: u8) -> Skim<()> {
        if self.peek()? != byte {
            return Err(Unsure);
        }
        self.i += 1;
        Ok(())
    }

    /// Nothing but whitespace left.
    pub fn end(&mut self) -> Skim<()> {
        match self.peek() {
            Err(Unsure) => Ok(()),
            Ok(_) => Err(Unsure),
        }
    }

    /// Takes a `null` if one is next.
    pub fn null(&mut self) -> Skim<bool> {
        if self.peek()? != b'n' {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    fn literal(&mut self, word: &[u8]) -> Skim<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(Unsure);
        }
        self.i += word.len();
        Ok(())
    }

    /// The rest of a string whose opening quote was taken: its raw bytes
    /// and whether it had escapes. Checked as serde checks a string it
    /// skips: no control characters, only JSON's escapes.
    fn string_rest(&mut self) -> Skim<(&'a [u8], bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = crate::json_text::find_stop(self.b, self.i);
            let byte = *self.b.get(self.i).ok_or(Unsure)?;
            self.i += 1;
            match byte {
                b'"' => return Ok((&self.b[start..self.i - 1], escaped)),
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return Err(Unsure),
                // `find_stop` stops at nothing else.
                _ => {}
            }
        }
    }

    /// After a backslash: one of JSON's escapes (serde checks no more in a
    /// string it skips; a lone surrogate passes).
    fn escape(&mut self) -> Skim<()> {
        let byte = *self.b.get(self.i).ok_or(Unsure)?;
        self.i += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.b.get(self.i..self.i + 4) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => {
                    self.i += 4;
                    Ok(())
                }
                _ => Err(Unsure),
            },
            _ => Err(Unsure),
        }
    }

    /// A string serde would read as a `str` (member names included):
    /// without escapes (serde would decode them, and refuse lone
    /// surrogates), and UTF-8, as serde checks. Strings it skips it does
    /// not check, nor does `skip`; a byte above 0x7f outside a string is a
    /// syntax error to both.
    pub(crate) fn plain_string(&mut self) -> Skim<&'a [u8]> {
        self.eat(b'"')?;
        match self.string_rest()? {
            // Most are ASCII, and `is_ascii` costs a third of `from_utf8`
            // on a short string.
            (bytes, false) if bytes.is_ascii() => Ok(bytes),
            (bytes, false) => std::str::from_utf8(bytes)
                .map(str::as_bytes)
                .map_err(|_| Unsure),
            (_, true) => Err(Unsure),
        }
    }

    /// A string to be written out again as it stands: its raw contents,
    /// UTF-8 (as serde checks a string it reads), with escapes only of
    /// the short kind, which mean the same in any JSON text. A `\u`
    /// escape gives up: serde refuses a lone surrogate, which copying
    /// would let through.
    pub(crate) fn json_string(&mut self) -> Skim<&'a [u8]> {
        self.eat(b'"')?;
        let (bytes, escaped) = self.string_rest()?;
        if escaped {
            let mut i = 0;
            while let Some(at) = bytes[i..].iter().position(|&b| b == b'\\') {
                // `string_rest` checked each escape has its byte.
                if bytes.get(i + at + 1) == Some(&b'u') {
                    return Err(Unsure);
                }
                i += at + 2;
            }
        }
        if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
            Ok(bytes)
        } else {
            Err(Unsure)
        }
    }

    /// A member name and its colon.
    fn name(&mut self) -> Skim<&'a [u8]> {
        let name = self.plain_string()?;
        self.eat(b':')?;
        Ok(name)
    }

    /// A finish reason: null or a string.
    fn reason(&mut self) -> Skim<Option<String>> {
        if self.null()? {
            return Ok(None);
        }
        let text = std::str::from_utf8(self.plain_string()?).map_err(|_| Unsure)?;
        Ok(Some(text.to_owned()))
    }

    /// The object that starts here, each member handed to `member` with
    /// its name; `member` reads the value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Skim<()>) -> Skim<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let name = self.name()?;
            member(self, name)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// The array that starts here, `element` reading each element.
    pub(crate) fn array(&mut self, mut element: impl FnMut(&mut Self) -> Skim<()>) -> Skim<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A value read by `deserialize_any` into a lenient type. serde
    /// converts its numbers (and refuses a huge exponent), so only plain
    /// integers are taken here; it reads its strings as `str`, so only
    /// strings without escapes.
    pub fn lenient(&mut self) -> Skim<Loose> {
        match self.peek()? {
            b'{' => return Ok(Loose::Object),
            b'0'..=b'9' => return self.plain_int().map(Loose::Int),
            // A negative integer that fits an `i64` is no count; `-0` is
            // (serde reads it as the float -0.0, which is not below zero).
            b'-' => {
                self.i += 1;
                let digits = self.plain_digits()?;
                if digits.len() > 18 || digits == b"0" {
                    return Err(Unsure);
                }
            }
            b'"' => drop(self.plain_string()?),
            // A sequence's elements are ignored, as `skip` checks them.
            b'[' | b't' | b'f' | b'n' => self.skip()?,
            _ => return Err(Unsure),
        }
        Ok(Loose::Other)
    }

    /// Up to 19 digits (always a `u64`) with no leading zero, fraction
    /// or exponent: an integer serde gives exactly.
    fn plain_digits(&mut self) -> Skim<&'a [u8]> {
        let start = self.i;
        let digits = self.digits();
        let next = self.b.get(self.i).copied();
        if digits == 0
            || digits > 19
            || (digits > 1 && self.b[start] == b'0')
            || matches!(next, Some(b'.' | b'e' | b'E'))
        {
            return Err(Unsure);
        }
        Ok(&self.b[start..self.i])
    }

    pub(crate) fn plain_int(&mut self) -> Skim<u64> {
        self.plain_digits()?.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(Unsure)
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    /// A number, checked against JSON's grammar only, as serde checks one
    /// it skips.
    fn number(&mut self) -> Skim<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            // A digit after a leading zero is refused by whoever reads on.
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => drop(self.digits()),
            _ => return Err(Unsure),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        Ok(())
    }

    /// Any value, checked as serde checks one it ignores: grammar only,
    /// numbers not converted, strings not decoded. Containers are tracked
    /// in a bit stack (1 = object), so nesting beyond 128 gives up.
    pub fn skip(&mut self) -> Skim<()> {
        let mut stack: u128 = 0;
        let mut depth = 0u32;
        loop {
            // A value; an opened container goes on the stack.
            let opened = match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                        false
                    } else {
                        if depth == 128 {
                            return Err(Unsure);
                        }
                        stack = (stack << 1) | u128::from(open == b'{');
                        depth += 1;
                        if open == b'{' {
                            self.name()?;
                        }
                        true
                    }
                }
                b'"' => {
                    self.i += 1;
                    self.string_rest()?;
                    false
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                    false
                }
                b't' => self.literal(b"true").map(|()| false)?,
                b'f' => self.literal(b"false").map(|()| false)?,
                b'n' => self.literal(b"null").map(|()| false)?,
                _ => return Err(Unsure),
            };
            if opened {
                continue;
            }
            // After a value: close what ends here, then the next element.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if in_object {
                            self.name()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return Err(Unsure),
                }
                self.i += 1;
                stack >>= 1;
                depth -= 1;
            }
        }
    }
}
