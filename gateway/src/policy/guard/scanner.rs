//! The compiled scanner: prefilter, regexes, validators, overlap resolution.
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::config::{
    compile_custom_regex, keyword_pattern, BuildError, GuardConfig, CUSTOM_REGEX_SIZE_LIMIT,
};
use super::finding::{Category, Finding, Kind};
use super::text::{accept, Check, Decode, Hay, Verdict, LOOKAROUND};
use super::{injection, pii, secrets};

/// Why a text was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error(
        "text of {len} bytes is over the guard's scan limit of {limit} bytes \
         (max_scan_bytes); refuse the input or raise the limit"
    )]
    TooLarge { len: usize, limit: usize },
}

struct Detector {
    kind: Kind,
    rule: Arc<str>,
    regex: Regex,
    check: Check,
    /// With the rule name for data found inside (`base64_decoded`).
    decode: Option<(Decode, Arc<str>)>,
}

/// The result of scanning part of a buffer (see [`Scanner::scan_window`]).
pub(super) struct Window {
    /// Resolved findings, ordered by start.
    pub findings: Vec<Finding>,
    /// Where the earliest match that more text could still change starts
    /// (the buffer's length if there is none).
    pub open_from: usize,
    /// When scanning with `more`: every regex match, accepted or not, and
    /// every candidate finding before overlaps were resolved. A stream cuts
    /// only where none of them straddles the cut: scanning never resumes
    /// inside a match (a one-shot scan never starts there), and a finding
    /// is never sent while a longer rival for its bytes may still grow.
    pub spans: Vec<Range<usize>>,
}

/// Detectors compiled from a [`GuardConfig`]; build once, share, scan many
/// times.
pub struct Scanner {
    detectors: Vec<Detector>,
    /// Literal anchors of every anchored detector, in one automaton (ASCII
    /// case-insensitive: a superset filter, the regexes decide).
    prefilter: Option<AhoCorasick>,
    /// Automaton pattern id → detector index.
    anchor_owner: Vec<usize>,
    anchored_count: usize,
    /// Detectors without a common literal; they always run.
    unanchored: Vec<usize>,
    /// Custom regexes have no known literal: one RegexSet pass says which of
    /// them match at all, and only those run to find where.
    custom_set: Option<(RegexSet, Vec<usize>)>,
    max_scan_bytes: usize,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.detectors.len())
            .field("max_scan_bytes", &self.max_scan_bytes)
            .finish()
    }
}

fn build_error(problem: String) -> BuildError {
    BuildError {
        problems: vec![problem],
    }
}

impl Scanner {
    /// Validates the config and compiles every enabled detector.
    pub fn new(config: &GuardConfig) -> Result<Scanner, BuildError> {
        let problems = config.validate("guard");
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let mut detectors = Vec::new();
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        let mut anchor_owner = Vec::new();
        let mut unanchored = Vec::new();
        let specs = pii::specs()
            .into_iter()
            .chain(secrets::specs())
            .chain(injection::specs());
        for spec in specs.filter(|s| config.detectors.contains(&s.kind)) {
            let pattern = if spec.flexible_spaces {
                spec.pattern.replace(' ', r"\s{1,8}")
            } else {
                spec.pattern.to_owned()
            };
            // A failure here is a bug in a built-in pattern (the tests
            // build every one), reported rather than panicking.
            let regex = Regex::new(&pattern)
                .map_err(|e| build_error(format!("built-in rule {}: {e}", spec.rule)))?;
            let index = detectors.len();
            detectors.push(Detector {
                kind: spec.kind,
                rule: Arc::from(spec.rule),
                regex,
                check: spec.check,
                decode: spec.decode.map(|(d, rule)| (d, Arc::from(rule))),
            });
            if spec.anchors.is_empty() {
                unanchored.push(index);
            }
            for anchor in spec.anchors {
                anchors.push(anchor.to_vec());
                anchor_owner.push(index);
            }
        }

        let mut set_patterns = Vec::new();
        let mut set_members = Vec::new();
        for (i, rule) in config.custom.iter().enumerate() {
            let index = detectors.len();
            let at = format!("guard.custom[{i}]");
            let regex = match &rule.regex {
                Some(pattern) => {
                    set_patterns.push(pattern.clone());
                    set_members.push(index);
                    compile_custom_regex(pattern)
                        .map_err(|e| build_error(format!("{at}.regex: {e}")))?
                }
                None => {
                    // Anchor on each keyword's first word, when ASCII case
                    // folding (the prefilter's) is all its case needs.
                    if rule.keywords.iter().all(|w| w.is_ascii()) {
                        for word in &rule.keywords {
                            if let Some(first) = word.split_whitespace().next() {
                                anchors.push(first.as_bytes().to_vec());
                                anchor_owner.push(index);
                            }
                        }
                    } else {
                        unanchored.push(index);
                    }
                    RegexBuilder::new(&keyword_pattern(&rule.keywords))
                        .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| build_error(format!("{at}.keywords: {e}")))?
                }
            };
            detectors.push(Detector {
                kind: Kind::Custom,
                rule: Arc::from(rule.name.as_str()),
                regex,
                check: accept,
                decode: None,
            });
        }

        let prefilter = if anchors.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&anchors)
                    .map_err(|e| build_error(format!("guard prefilter: {e}")))?,
            )
        };
        let custom_set = if set_patterns.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(&set_patterns)
                .size_limit(CUSTOM_REGEX_SIZE_LIMIT * set_patterns.len())
                .build()
                .map_err(|e| build_error(format!("guard.custom: {e}")))?;
            Some((set, set_members))
        };
        let mut anchored: Vec<usize> = anchor_owner.clone();
        anchored.sort_unstable();
        anchored.dedup();
        Ok(Scanner {
            detectors,
            prefilter,
            anchor_owner,
            anchored_count: anchored.len(),
            unanchored,
            custom_set,
            max_scan_bytes: config.max_scan_bytes,
        })
    }

    pub fn max_scan_bytes(&self) -> usize {
        self.max_scan_bytes
    }

    /// Scans one text. Findings are ordered by start and do not overlap
    /// within data (PII, secrets, custom) or within injection; a data
    /// finding may overlap an injection one, since one is redacted and the
    /// other refused.
    pub fn scan(&self, text: &str) -> Result<Vec<Finding>, ScanError> {
        if text.len() > self.max_scan_bytes {
            return Err(ScanError::TooLarge {
                len: text.len(),
                limit: self.max_scan_bytes,
            });
        }
        Ok(self.scan_window(text, 0, false).findings)
    }

    /// True if any detector of `category` finds something.
    pub fn contains(&self, text: &str, category: Category) -> Result<bool, ScanError> {
        Ok(self.scan(text)?.iter().any(|f| f.category() == category))
    }

    /// Which detectors can match in `hay[from..]`.
    fn triggered(&self, hay: &str, from: usize) -> Vec<bool> {
        let mut active = vec![false; self.detectors.len()];
        for &i in &self.unanchored {
            active[i] = true;
        }
        if let Some(ac) = &self.prefilter {
            let input = aho_corasick::Input::new(hay).span(from..hay.len());
            match ac.try_find_overlapping_iter(input) {
                Ok(hits) => {
                    let mut left = self.anchored_count;
                    for m in hits {
                        let owner = self.anchor_owner[m.pattern().as_usize()];
                        if !active[owner] {
                            active[owner] = true;
                            left -= 1;
                            if left == 0 {
                                break;
                            }
                        }
                    }
                }
                // Not expected for a default-built automaton; scanning
                // without the filter is slower but finds the same.
                Err(_) => active.iter_mut().for_each(|a| *a = true),
            }
        }
        if let Some((set, members)) = &self.custom_set {
            let matched = set.matches_at(hay, from);
            for (k, &index) in members.iter().enumerate() {
                active[index] = matched.matched(k);
            }
        }
        active
    }

    /// Scans `hay[from..]`, with `hay[..from]` as look-behind context only.
    /// With `more`, text may follow `hay`: matches that could still change
    /// are reported through `open_from` (and validators may say Pending).
    pub(super) fn scan_window(&self, hay: &str, from: usize, more: bool) -> Window {
        self.scan_inner(hay, from, more, true)
    }

    /// `decode`: look for data inside encoded matches (one level deep: the
    /// decoded text is not decoded again).
    fn scan_inner(&self, hay: &str, from: usize, more: bool, decode: bool) -> Window {
        let active = self.triggered(hay, from);
        let h = Hay { text: hay, more };
        let mut open_from = hay.len();
        let mut spans = Vec::new();
        let mut candidates = Vec::new();
        let near_end = |end: usize| more && end + LOOKAROUND >= hay.len();
        for (detector, _) in self.detectors.iter().zip(&active).filter(|(_, &a)| a) {
            let mut at = from;
            while at <= hay.len() {
                let Some(m) = detector.regex.find_at(hay, at) else {
                    break;
                };
                let r = m.range();
                if r.is_empty() {
                    at = r.end + hay[r.end..].chars().next().map_or(1, char::len_utf8);
                    continue;
                }
                at = r.end;
                if more {
                    spans.push(r.clone());
                }
                if near_end(r.end) {
                    open_from = open_from.min(r.start);
                }
                match (detector.check)(&h, r.clone()) {
                    Verdict::Accept(f)
                        if f.start >= from && f.start < f.end && hay.get(f.clone()).is_some() =>
                    {
                        if near_end(f.end) {
                            open_from = open_from.min(f.start);
                        }
                        if more {
                            spans.push(f.clone());
                        }
                        candidates.push(Finding {
                            kind: detector.kind,
                            rule: detector.rule.clone(),
                            range: f,
                        });
                    }
                    Verdict::Pending => open_from = open_from.min(r.start),
                    _ => {}
                }
                if let (true, Some((decoder, rule))) = (decode, &detector.decode) {
                    if let Some(kind) = decoder(&hay[r.clone()]).and_then(|t| self.data_kind(&t)) {
                        candidates.push(Finding {
                            kind,
                            rule: rule.clone(),
                            range: r,
                        });
                    }
                }
            }
        }
        Window {
            findings: resolve(candidates),
            open_from,
            spans,
        }
    }
}

impl Scanner {
    /// The kind of the first data finding in decoded text.
    fn data_kind(&self, decoded: &str) -> Option<Kind> {
        self.scan_inner(decoded, 0, false, false)
            .findings
            .iter()
            .find(|f| f.category() != Category::Injection)
            .map(|f| f.kind)
    }
}

/// Overlaps are resolved separately for data and for injection findings:
/// longest first, then the more specific kind, then the earlier start.
fn resolve(candidates: Vec<Finding>) -> Vec<Finding> {
    let (injection, data): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|f| f.category() == Category::Injection);
    let mut out = pick(data);
    out.extend(pick(injection));
    out.sort_by(|a, b| {
        (a.range.start, a.range.end, a.kind).cmp(&(b.range.start, b.range.end, b.kind))
    });
    out
}

fn pick(mut candidates: Vec<Finding>) -> Vec<Finding> {
    candidates.sort_by(|a, b| {
        b.range
            .len()
            .cmp(&a.range.len())
            .then(b.kind.specificity().cmp(&a.kind.specificity()))
            .then(a.range.start.cmp(&b.range.start))
            .then(a.rule.cmp(&b.rule))
    });
    // Taken ranges by start; they never overlap, so only the nearest one
    // starting before a candidate's end can overlap it.
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for f in candidates {
        let overlaps = taken
            .range(..f.range.end)
            .next_back()
            .is_some_and(|(_, &end)| end > f.range.start);
        if !overlaps {
            taken.insert(f.range.start, f.range.end);
            out.push(f);
        }
    }
    out
}
