//! The compiled scanner: prefilter, regexes, validators, overlap resolution.
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, MatchKind, StartKind};
use regex::{RegexSet, RegexSetBuilder};
use regex_automata::util::pool::Pool;
use regex_automata::{hybrid, meta, nfa::thompson};

use super::classes;
use super::config::{
    compile_custom_regex, keyword_pattern, BuildError, GuardConfig, CUSTOM_REGEX_SIZE_LIMIT,
};
use super::finding::{Category, Finding, Kind};
use super::runs::{self, ContextWords, NumberRun, Trigger};
use super::text::{
    accept, ceil_boundary, floor_boundary, max_match_len, Check, Decoding, Hay, Near, Spec,
    Verdict, LOOKAROUND,
};
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
    regex: meta::Regex,
    check: Check,
    /// With the rule name for data found inside (`base64_decoded`).
    decode: Option<(Decoding, Arc<str>)>,
    /// What runs it: its anchors (then `group`) or a kind of run.
    trigger: Trigger,
    /// The trigger group of its anchors; `None` with [`Trigger::Anchors`]:
    /// no anchors, so it runs over the whole text (always, or for a custom
    /// regex when the RegexSet says it matches).
    group: Option<usize>,
    /// Its longest match ([`max_match_len`]): the window after an IBAN
    /// country code.
    reach: Option<usize>,
    /// The words a number run needs before it ([`runs::NumberNeeds`]).
    context: Option<ContextWords>,
    /// Case-insensitive with Unicode folding, where `k` and `s` also match
    /// KELVIN SIGN and LONG S: an anchor spelled with them escapes the
    /// ASCII prefilter, so when either occurs the rule runs over the whole
    /// text (as it did before windows) rather than around its anchors.
    folds: bool,
}

/// Detectors with the same anchors and longest match share one set of
/// windows.
struct Group {
    /// How far from an anchor hit a member's match can reach, either way:
    /// the longest match any member can have (see
    /// [`super::text::max_match_len`]). `None`: some member's matches are
    /// unbounded, so members run over the whole text once triggered, or,
    /// when `leading`, from each hit ([`Scope::Starts`]).
    reach: Option<usize>,
    /// Members' matches start at an anchor hit with a word boundary before
    /// it ([`Trigger::LeadingAnchors`]).
    leading: bool,
    /// Members' matches hold an anchor hit with a word boundary before it
    /// ([`Trigger::WordAnchors`]); hits inside words are ignored.
    word_start: bool,
    /// Its members' [`Near`] words (an index into `Scanner::nears`): an
    /// anchor hit opens a window only with one of them close by.
    near: Option<usize>,
    /// Where its near words have a `tail`: the check that a match can end
    /// near a hit at all.
    ends: Option<Ends>,
}

/// For a group whose matches end within `tail` bytes of an anchor hit's
/// start (rules that end with their anchor word): its members' patterns,
/// each followed by up to `tail` characters, as a reverse lazy DFA. An
/// anchored reverse search from `tail` past a hit reads back only as far
/// as the text still fits the end of a phrase, usually a few bytes; where
/// it finds nothing, no match ends near the hit and the hit opens no
/// window. Its window before the hit (a longest match, hundreds of bytes)
/// is what the forward search would otherwise read.
struct Ends {
    dfa: hybrid::dfa::DFA,
    caches: Pool<hybrid::dfa::Cache, CacheFn>,
    tail: usize,
}

type CacheFn = Box<dyn Fn() -> hybrid::dfa::Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

impl Ends {
    fn new(patterns: &[String], tail: usize) -> Result<Ends, BuildError> {
        let padded: Vec<String> = patterns
            .iter()
            .map(|p| format!("(?:{p})(?s:.){{0,{tail}}}"))
            .collect();
        let dfa = hybrid::dfa::DFA::builder()
            // Unicode `\b` is decided on ASCII text; the search gives up
            // (and the hit opens its window) at other bytes.
            .configure(hybrid::dfa::DFA::config().unicode_word_boundary(true))
            .thompson(thompson::Config::new().reverse(true))
            .build_many(&padded)
            .map_err(|e| build_error(format!("guard rule end check: {e}")))?;
        let for_caches = dfa.clone();
        Ok(Ends {
            dfa,
            caches: Pool::new(Box::new(move || for_caches.create_cache())),
            tail,
        })
    }

    /// Whether a match in `hay[low..]` may end within `tail` bytes of
    /// `hit_start`: false only when none can.
    fn may_end(&self, hay: &str, low: usize, hit_start: usize) -> bool {
        let end = (hit_start + self.tail).min(hay.len());
        let input = regex_automata::Input::new(hay)
            .range(low..end)
            .anchored(regex_automata::Anchored::Yes)
            .earliest(true);
        let mut cache = self.caches.get();
        !matches!(self.dfa.try_search_rev(&mut cache, &input), Ok(None))
    }
}

/// Non-ASCII characters that Unicode case folding makes equal to ASCII
/// letters (U+017F LONG S = s, U+212A KELVIN SIGN = k). The prefilter folds
/// ASCII only; these tell the scan to give folding rules the whole text.
pub(super) const FOLD_ANCHORS: [&str; 2] = ["\u{17F}", "\u{212A}"];

/// Which text a detector's regex runs over in one scan.
enum Scope<'a> {
    Skip,
    Whole,
    /// Merged, ordered windows; every match lies inside one of them.
    Windows(&'a [Range<usize>]),
    /// Ordered positions where every match starts (leading anchor hits of
    /// a rule whose matches have no bound): one anchored search at each.
    Starts(&'a [usize]),
}

/// What the prefilter passes found: per group whether an anchor occurred,
/// and the windows around the hits; and the runs the run triggers need.
struct Triggers {
    hit: Vec<bool>,
    windows: Vec<Vec<Range<usize>>>,
    /// Per leading group without a longest match, its hits' starts.
    starts: Vec<Vec<usize>>,
    /// A fold character occurred.
    folded: bool,
    /// Per near set, where its whole words start, in order.
    near_hits: Vec<Vec<usize>>,
    /// Per group with a near set, its anchor hits, until the near words
    /// after them are known too.
    deferred: Vec<Vec<Range<usize>>>,
    /// The prefilter failed; everything runs over the whole text.
    all: bool,
    numbers: Vec<NumberRun>,
    country_codes: Vec<usize>,
    colon_runs: Vec<Range<usize>>,
    base64_runs: Vec<Range<usize>>,
}

/// One literal automaton and, per pattern, what its hits mean.
struct Prefilter {
    automaton: Literals,
    uses: Vec<PatternUse>,
    search: Search,
    /// The bytes patterns start with ([`Search::Lead`]).
    first: Box<[bool; 256]>,
    /// Some hit of it matters to a data (not injection) detector: decoded
    /// text, scanned for data only, skips the others.
    data: bool,
    /// Pattern lengths ([`PatternUse::shorter`]).
    lens: Vec<usize>,
}

/// A prefilter's literals compiled for its [`Search`].
enum Literals {
    Searcher(AhoCorasick),
    /// Walked from word starts ([`Search::WordStarts`]).
    Trie(Box<WordTrie>),
}

/// An anchored DFA walked byte by byte from each word start whose first
/// three bytes may start a literal.
struct WordTrie {
    dfa: aho_corasick::dfa::DFA,
    prefixes: Prefixes,
}

impl Literals {
    /// For [`Search::WordStarts`]: anchored and Standard, so a walk from a
    /// word start reports every literal that starts there, each at the
    /// state that ends it.
    fn word_trie(words: &[Vec<u8>]) -> Result<Literals, aho_corasick::BuildError> {
        let trie = aho_corasick::dfa::Builder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Anchored)
            .build(words)?;
        Ok(Literals::Trie(Box::new(WordTrie {
            dfa: trie,
            prefixes: Prefixes::of(words),
        })))
    }
}

/// How a prefilter automaton is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    /// Leftmost-longest from each position after the last hit's start,
    /// the shorter literals at that start taken from
    /// [`PatternUse::shorter`]: every hit an overlapping search reports,
    /// since each start is tried and all literals that match at one start
    /// are prefixes of the longest. The automaton's overlapping search
    /// cost about 3 ns per byte, a third of the scan; this one runs its
    /// plain DFA loop (and SIMD prefilter where it has one).
    Leftmost { exact: bool },
    /// Patterns that start with a non-ASCII character (zero-width and
    /// bidi characters, fullwidth letters, fold characters), searched
    /// anchored where such a character starts with a byte that starts a
    /// pattern (see [`lead_positions`]): in one automaton with the ASCII
    /// literals, text full of "’" and "—" (E2 80 ..) kept its SIMD
    /// prefilter stopping, about 1.5 ms per MiB.
    Lead,
    /// Literals that ignore ASCII case, start with a word byte and count
    /// only at a word start (every group they trigger needs one, and near
    /// words are whole words): walked from each word start whose first
    /// three bytes may start one ([`WordTrie`]). The unanchored automaton,
    /// with about 190 such literals and no SIMD prefilter, spent about 2 ns
    /// on every byte, a quarter of the scan.
    WordStarts,
}

impl Search {
    fn ignores_case(self) -> bool {
        matches!(self, Search::Leftmost { exact: false } | Search::WordStarts)
    }
}

/// What a prefilter pattern is to the scan.
#[derive(Clone, Default)]
struct PatternUse {
    /// The groups whose anchor it is.
    groups: Vec<usize>,
    /// The near sets it is a word of.
    nears: Vec<usize>,
    /// A fold character ([`FOLD_ANCHORS`]).
    fold: bool,
    /// Patterns of the automaton that are prefixes of this one
    /// ([`Search::Leftmost`]): where it is hit, they are too.
    shorter: Vec<usize>,
}

/// Which run triggers some detector uses, so a scan computes only those.
struct RunKinds {
    numbers: bool,
    /// The fewest digits a number rule needs ([`runs::Runs::numbers`]).
    min_digits: u32,
    country_codes: bool,
    colons: bool,
    /// The shortest run a base64 rule needs.
    base64: Option<usize>,
    /// A data (not injection) rule runs on base64 runs.
    base64_data: bool,
}

impl Default for RunKinds {
    fn default() -> RunKinds {
        RunKinds {
            numbers: false,
            // Lowered by each number rule.
            min_digits: u32::MAX,
            country_codes: false,
            colons: false,
            base64: None,
            base64_data: false,
        }
    }
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
    /// Literal anchors of every anchored detector, each once: those of
    /// case-sensitive regexes that start with ASCII in one automaton,
    /// which can then skip ahead with its SIMD prefilter; those that start
    /// with a non-ASCII character (and [`FOLD_ANCHORS`]) in one searched at
    /// such characters only; the rest in one that ignores ASCII case (a
    /// superset filter, the regexes decide).
    prefilters: Vec<Prefilter>,
    /// Case-sensitive anchors of one byte ("@"), each with the groups it
    /// triggers: found with a byte search, since one such pattern would
    /// make the automaton's SIMD prefilter stop at most bytes.
    byte_anchors: Vec<(u8, Vec<usize>)>,
    groups: Vec<Group>,
    /// The near sets groups name.
    nears: Vec<Near>,
    runs: RunKinds,
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
        let mut groups = Groups::default();
        let mut runs = RunKinds::default();
        // Per group whose near words have a tail, the tail and its members'
        // patterns ([`Ends`]).
        let mut ending: BTreeMap<usize, (usize, Vec<String>)> = BTreeMap::new();
        let specs = pii::specs()
            .into_iter()
            .chain(secrets::specs())
            .chain(injection::specs());
        for spec in specs.filter(|s| config.detectors.contains(&s.kind)) {
            let pattern = builtin_pattern(&spec);
            // A failure here is a bug in a built-in pattern (the tests
            // build every one), reported rather than panicking.
            // Where a run triggers the rule, its window starts at the run,
            // so the regex's own literal prefilter finds nothing the window
            // did not; it stopped at every digit, about 120 ns a window.
            // A rule that ends at its anchor word (`Near::tail`) has its
            // window before the anchor, where its first words are, and
            // those are common ("ai", "model"): the prefilter stopped at
            // each, four times the DFA alone (ai_without_limits: 0.84 against
            // 0.24 ms per MiB of the bench's mixed text).
            let prefilter = matches!(
                spec.trigger,
                Trigger::Anchors | Trigger::LeadingAnchors | Trigger::WordAnchors
            ) && spec.near.is_none_or(|near| near.tail.is_none());
            let regex = matcher(&pattern, prefilter, None)
                .map_err(|e| build_error(format!("built-in rule {}: {e}", spec.rule)))?;
            let words: Vec<&[u8]> = spec.anchors.to_vec();
            let reach = max_match_len(&pattern);
            let exact = case_sensitive(&pattern);
            let group = match spec.trigger {
                Trigger::Anchors => groups.join(&words, reach, exact, Start::Any, spec.near),
                Trigger::LeadingAnchors => {
                    groups.join(&words, reach, exact, Start::Leading, spec.near)
                }
                Trigger::WordAnchors => groups.join(&words, reach, exact, Start::Word, spec.near),
                Trigger::Number(needs) => {
                    runs.numbers = true;
                    runs.min_digits = runs.min_digits.min(needs.digits);
                    None
                }
                Trigger::CountryCode => {
                    runs.country_codes = true;
                    None
                }
                Trigger::Colons => {
                    runs.colons = true;
                    None
                }
                Trigger::Base64 { min, .. } => {
                    runs.base64 = Some(runs.base64.map_or(min, |m: usize| m.min(min)));
                    runs.base64_data |= spec.kind.category() != Category::Injection;
                    None
                }
            };
            let context = match spec.trigger {
                Trigger::Number(needs) => needs
                    .context
                    .map(|(words, reach)| ContextWords::new(words, reach))
                    .transpose()?,
                _ => None,
            };
            if let (Some(g), Some(tail)) = (group, spec.near.and_then(|near| near.tail)) {
                ending
                    .entry(g)
                    .or_insert((tail, Vec::new()))
                    .1
                    .push(pattern.clone());
            }
            detectors.push(Detector {
                kind: spec.kind,
                rule: Arc::from(spec.rule),
                trigger: spec.trigger,
                group,
                reach,
                context,
                folds: folds(&pattern),
                regex,
                check: spec.check,
                decode: spec.decode.map(|d| (d, Arc::from(d.data_rule))),
            });
        }

        let mut set_patterns = Vec::new();
        let mut set_members = Vec::new();
        for (i, rule) in config.custom.iter().enumerate() {
            let index = detectors.len();
            let at = format!("guard.custom[{i}]");
            let (regex, group, folds) = match &rule.regex {
                Some(pattern) => {
                    set_patterns.push(pattern.clone());
                    set_members.push(index);
                    // The regex crate's checks and messages, then the same
                    // pattern with the same limit as the scanner runs it.
                    compile_custom_regex(pattern)
                        .map_err(|e| build_error(format!("{at}.regex: {e}")))?;
                    let regex = matcher(pattern, true, Some(CUSTOM_REGEX_SIZE_LIMIT))
                        .map_err(|e| build_error(format!("{at}.regex: {e}")))?;
                    (regex, None, false)
                }
                None => {
                    let pattern = keyword_pattern(&rule.keywords);
                    // Anchor on each keyword's first word, when ASCII case
                    // folding (the prefilter's) is all its case needs.
                    let group = if rule.keywords.iter().all(|w| w.is_ascii()) {
                        let words: Vec<&[u8]> = rule
                            .keywords
                            .iter()
                            .filter_map(|w| w.split_whitespace().next())
                            .map(str::as_bytes)
                            .collect();
                        groups.join(&words, max_match_len(&pattern), false, Start::Any, None)
                    } else {
                        None
                    };
                    let regex = matcher(&pattern, true, Some(CUSTOM_REGEX_SIZE_LIMIT))
                        .map_err(|e| build_error(format!("{at}.keywords: {e}")))?;
                    (regex, group, folds(&pattern))
                }
            };
            detectors.push(Detector {
                kind: Kind::Custom,
                rule: Arc::from(rule.name.as_str()),
                regex,
                check: accept,
                decode: None,
                trigger: Trigger::Anchors,
                group,
                reach: None,
                context: None,
                folds,
            });
        }

        let Groups {
            mut groups,
            anchors,
            anchor_groups,
            nears,
            anchor_nears,
            ..
        } = groups;
        for (g, (tail, patterns)) in ending {
            groups[g].ends = Some(Ends::new(&patterns, tail)?);
        }
        // Groups some data (not injection) detector is a member of.
        let mut data_groups = vec![false; groups.len()];
        for d in &detectors {
            if let (Some(g), true) = (d.group, d.kind.category() != Category::Injection) {
                data_groups[g] = true;
            }
        }
        let mut prefilters = Vec::new();
        let mut byte_anchors = Vec::new();
        let folding = anchors.iter().any(|(_, exact)| !exact);
        let groups_by_id = &groups;
        // Case-sensitive literals starting with ASCII, those starting with
        // a non-ASCII character, and the ASCII-case-insensitive ones: those
        // that count at word starts only, and the rest.
        for search in [
            Search::Leftmost { exact: true },
            Search::Lead,
            Search::WordStarts,
            Search::Leftmost { exact: false },
        ] {
            let mut words: Vec<Vec<u8>> = Vec::new();
            let mut uses = Vec::new();
            for (((word, exact), groups), nears) in
                anchors.iter().zip(&anchor_groups).zip(&anchor_nears)
            {
                let non_ascii = word.first().is_some_and(|b| !b.is_ascii());
                // Near words count as whole words only.
                let at_word_starts = word.first().is_some_and(|&b| is_word_byte(b))
                    && groups.iter().all(|&g| groups_by_id[g].word_start);
                match search {
                    Search::Leftmost { exact: true } if *exact && !non_ascii => {
                        if let [byte] = word[..] {
                            if nears.is_empty() {
                                byte_anchors.push((byte, groups.clone()));
                                continue;
                            }
                        }
                    }
                    Search::Lead if *exact && non_ascii => {}
                    Search::WordStarts if !*exact && at_word_starts => {}
                    Search::Leftmost { exact: false } if !*exact && !at_word_starts => {}
                    _ => continue,
                }
                words.push(word.clone());
                uses.push(PatternUse {
                    groups: groups.clone(),
                    nears: nears.clone(),
                    fold: false,
                    shorter: Vec::new(),
                });
            }
            // Fold characters only matter to rules that ignore case.
            if search == Search::Lead && folding {
                for fold in FOLD_ANCHORS {
                    words.push(fold.as_bytes().to_vec());
                    uses.push(PatternUse {
                        fold: true,
                        ..PatternUse::default()
                    });
                }
            }
            if words.is_empty() {
                continue;
            }
            if let Search::Leftmost { .. } = search {
                // A leftmost-longest search reports the longest literal at
                // a start; the shorter ones there count too.
                for (i, use_) in uses.iter_mut().enumerate() {
                    use_.shorter = (0..words.len())
                        .filter(|&j| j != i && words[i].starts_with(&words[j]))
                        .collect();
                }
            }
            let prefilter_error =
                |e: aho_corasick::BuildError| build_error(format!("guard prefilter: {e}"));
            let automaton = match search {
                Search::WordStarts => Literals::word_trie(&words).map_err(prefilter_error)?,
                _ => Literals::Searcher(
                    AhoCorasick::builder()
                        .ascii_case_insensitive(search.ignores_case())
                        .match_kind(if search == Search::Lead {
                            MatchKind::Standard
                        } else {
                            MatchKind::LeftmostLongest
                        })
                        .start_kind(if search == Search::Lead {
                            StartKind::Anchored
                        } else {
                            StartKind::Unanchored
                        })
                        // A DFA: the automatic choice for this many patterns
                        // is a noncontiguous NFA, about three times slower
                        // per byte when the prefilter cannot skip (measured
                        // on the bench's mixed text).
                        .kind(Some(AhoCorasickKind::DFA))
                        .build(&words)
                        .map_err(prefilter_error)?,
                ),
            };
            let mut first = [false; 256];
            for word in &words {
                first[usize::from(word[0])] = true;
            }
            let data = uses
                .iter()
                .any(|u| u.fold || u.groups.iter().any(|&g| data_groups[g]));
            prefilters.push(Prefilter {
                automaton,
                uses,
                data,
                search,
                first: Box::new(first),
                lens: words.iter().map(Vec::len).collect(),
            });
        }
        let custom_set = if set_patterns.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(&set_patterns)
                .size_limit(CUSTOM_REGEX_SIZE_LIMIT * set_patterns.len())
                .build()
                .map_err(|e| build_error(format!("guard.custom: {e}")))?;
            Some((set, set_members))
        };
        Ok(Scanner {
            detectors,
            prefilters,
            byte_anchors,
            groups,
            nears,
            runs,
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

    /// The prefilter passes over `hay[from..]`: which groups' anchors
    /// occur, and where; and the runs the run triggers need.
    /// `data_only`: only data detectors will run (decoded text).
    fn triggers(&self, hay: &str, from: usize, data_only: bool) -> Triggers {
        let mut t = Triggers {
            hit: vec![false; self.groups.len()],
            windows: Vec::new(),
            starts: Vec::new(),
            folded: false,
            near_hits: Vec::new(),
            deferred: Vec::new(),
            all: false,
            numbers: Vec::new(),
            country_codes: Vec::new(),
            colon_runs: Vec::new(),
            base64_runs: Vec::new(),
        };
        // Decoded text is searched for base64 only where a data rule runs
        // on base64 runs.
        let base64 = self
            .runs
            .base64
            .filter(|_| !data_only || self.runs.base64_data);
        let min_digits = self.runs.numbers.then_some(self.runs.min_digits);
        if min_digits.is_some() || base64.is_some() {
            let found = runs::runs(hay, from, min_digits, base64);
            t.numbers = found.numbers;
            t.base64_runs = found.base64;
        }
        if self.runs.country_codes {
            t.country_codes = runs::country_codes(hay, from);
        }
        if self.runs.colons {
            t.colon_runs = runs::colon_runs(hay, from);
        }
        for (byte, groups) in &self.byte_anchors {
            for (at, _) in hay[from..].match_indices(char::from(*byte)) {
                let at = from + at;
                for &g in groups {
                    self.hit_window(&mut t, g, at..at + 1, from, hay.as_bytes());
                }
            }
        }
        for pre in &self.prefilters {
            if data_only && !pre.data {
                continue;
            }
            let searcher = match &pre.automaton {
                Literals::Trie(trie) => {
                    let hay = hay.as_bytes();
                    let walked = walk_word_starts(trie, hay, from, |hit| {
                        self.record_hit(&mut t, pre, hit, from, hay);
                    });
                    if walked.is_err() {
                        t.all = true;
                        return t;
                    }
                    continue;
                }
                Literals::Searcher(searcher) => searcher,
            };
            if pre.search == Search::Lead {
                let first = &pre.first;
                // Non-ASCII literals are whole characters or their first
                // bytes, so none starts inside another or inside a
                // character, and one anchored search per start finds all.
                for at in lead_positions(hay.as_bytes(), from, first) {
                    let input = aho_corasick::Input::new(hay)
                        .span(at..hay.len())
                        .anchored(Anchored::Yes);
                    match searcher.try_find(input) {
                        Ok(Some(m)) => self.record_hit(&mut t, pre, m, from, hay.as_bytes()),
                        Ok(None) => {}
                        Err(_) => {
                            t.all = true;
                            return t;
                        }
                    }
                }
                continue;
            }
            let mut at = from;
            while at < hay.len() {
                let input = aho_corasick::Input::new(hay).span(at..hay.len());
                let m = match searcher.try_find(input) {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    // Not expected for a default-built automaton; scanning
                    // without the filter is slower but finds the same.
                    Err(_) => {
                        t.all = true;
                        return t;
                    }
                };
                self.record_hit(&mut t, pre, m, from, hay.as_bytes());
                for &j in &pre.uses[m.pattern().as_usize()].shorter {
                    let shorter = aho_corasick::Match::must(j, m.start()..m.start() + pre.lens[j]);
                    self.record_hit(&mut t, pre, shorter, from, hay.as_bytes());
                }
                at = m.start() + 1;
            }
        }
        // Anchor hits of groups with a near set open windows now that every
        // near word is known: only those with one close by.
        for g in 0..self.groups.len() {
            let Some(n) = self.groups[g].near else {
                continue;
            };
            let near = &self.nears[n];
            let hits = t
                .deferred
                .get_mut(g)
                .map(std::mem::take)
                .unwrap_or_default();
            for hit in hits {
                let low = hit.start.saturating_sub(near.before);
                let high = hit.start + near.after;
                let words = t.near_hits.get(n).map_or(&[][..], Vec::as_slice);
                let first = words.partition_point(|&w| w < low);
                if words.get(first).is_none_or(|&w| w > high) {
                    continue;
                }
                if let Some(ends) = &self.groups[g].ends {
                    let low = self.window_start(g, &hit, from);
                    if !ends.may_end(hay, low, hit.start) {
                        continue;
                    }
                }
                self.open_window(&mut t, g, hit, from, hay.len());
            }
        }
        // Each source gives hits in order of their start, but windows start
        // a longest match before a hit's end, and a group's anchors may
        // come from two sources (a byte and a longer literal): windows that
        // are out of order or overlap are ordered and merged here, so that
        // every match lies inside one window.
        for windows in &mut t.windows {
            if !windows.windows(2).all(|w| w[0].end < w[1].start) {
                windows.sort_by_key(|w| w.start);
                let unordered = std::mem::take(windows);
                for w in unordered {
                    push_window(windows, w);
                }
            }
        }
        // Hit starts of a group whose anchors come from two sources are
        // ordered here, each once, for `Pass::run_from`.
        for starts in &mut t.starts {
            if !starts.is_sorted() {
                starts.sort_unstable();
            }
            starts.dedup();
        }
        t
    }

    /// What one prefilter hit means: anchor hits for its groups, a near
    /// word, a fold character.
    fn record_hit(
        &self,
        t: &mut Triggers,
        pre: &Prefilter,
        m: aho_corasick::Match,
        from: usize,
        hay: &[u8],
    ) {
        let uses = &pre.uses[m.pattern().as_usize()];
        t.folded |= uses.fold;
        for &g in &uses.groups {
            self.hit_window(t, g, m.start()..m.end(), from, hay);
        }
        if !uses.nears.is_empty() && whole_word(hay, m.start()..m.end()) {
            for &n in &uses.nears {
                list(&mut t.near_hits, self.nears.len(), n).push(m.start());
            }
        }
    }

    /// Records an anchor hit of group `g`: the group runs, in the window
    /// around the hit.
    fn hit_window(&self, t: &mut Triggers, g: usize, hit: Range<usize>, from: usize, hay: &[u8]) {
        let glued = hit.start > 0 && is_word_byte(hay[hit.start - 1]);
        if glued && self.groups[g].word_start {
            return;
        }
        if self.groups[g].near.is_some() {
            list(&mut t.deferred, self.groups.len(), g).push(hit);
            return;
        }
        self.open_window(t, g, hit, from, hay.len());
    }

    /// Opens group `g`'s window around an anchor hit that counts (at a word
    /// start where the group needs one, and not glued where it leads).
    fn open_window(&self, t: &mut Triggers, g: usize, hit: Range<usize>, from: usize, len: usize) {
        t.hit[g] = true;
        let Some(reach) = self.groups[g].reach else {
            // A window would reach to the end of the text; a match that
            // starts at this hit is found from here instead.
            if self.groups[g].leading && hit.start >= from {
                list(&mut t.starts, self.groups.len(), g).push(hit.start);
            }
            return;
        };
        // One byte more at the end, so that no match ends where the window
        // does: there `\b` and `$` would see the end of the text instead
        // of what follows.
        let start = self.window_start(g, &hit, from);
        // Hits without a near word never get here, so a near set's tail
        // bounds every window of its group.
        let tail = self.groups[g]
            .near
            .and_then(|n| self.nears[n].tail)
            .map_or(reach, |tail| tail.min(reach));
        let end = (hit.start + tail + 1).min(len);
        if self.groups[g].leading {
            // No match starts at a hit inside a word (those never get
            // here), and one that starts at this hit ends within `reach`.
            if hit.start >= from {
                push_window(list(&mut t.windows, self.groups.len(), g), hit.start..end);
            }
            return;
        }
        push_window(list(&mut t.windows, self.groups.len(), g), start..end);
    }

    /// Where the window of group `g` around an anchor hit starts: a match
    /// of at most `reach` bytes that contains the hit starts here or
    /// later. Window starts follow hit ends.
    fn window_start(&self, g: usize, hit: &Range<usize>, from: usize) -> usize {
        let reach = self.groups[g].reach.unwrap_or(usize::MAX);
        hit.end.saturating_sub(reach).max(from)
    }

    /// Where detector `i` runs in this scan: `Skip`, `Whole`, or windows
    /// (in `scratch` for run triggers).
    fn scope<'t>(
        &self,
        i: usize,
        hay: &str,
        more: bool,
        t: &'t Triggers,
        custom: &[bool],
        scratch: &'t mut Vec<Range<usize>>,
    ) -> Scope<'t> {
        let detector = &self.detectors[i];
        if t.all {
            return Scope::Whole;
        }
        // One byte past a run, as past an anchor window: `\b` sees what
        // follows.
        let past = |end: usize| (end + 1).min(hay.len());
        scratch.clear();
        match detector.trigger {
            Trigger::Anchors | Trigger::LeadingAnchors | Trigger::WordAnchors => {}
            Trigger::Number(needs) => {
                scratch.extend(
                    t.numbers
                        .iter()
                        .filter(|run| {
                            needs.counted_in(run)
                                && detector
                                    .context
                                    .as_ref()
                                    .is_none_or(|words| words.before(hay, run.range.start))
                        })
                        .map(|run| run.range.start..past(run.range.end)),
                );
                return Scope::Windows(scratch);
            }
            Trigger::CountryCode => {
                let Some(reach) = detector.reach else {
                    return if t.country_codes.is_empty() {
                        Scope::Skip
                    } else {
                        Scope::Whole
                    };
                };
                for &start in &t.country_codes {
                    push_window(scratch, start..(start + reach + 1).min(hay.len()));
                }
                return Scope::Windows(scratch);
            }
            Trigger::Colons => {
                scratch.extend(t.colon_runs.iter().map(|r| r.start..past(r.end)));
                return Scope::Windows(scratch);
            }
            Trigger::Base64 { min, max } => {
                // A run no longer than `max` is one match (the run and its
                // padding, which decoding drops), so a run that cannot
                // decode to text holds nothing for the rule. A longer one
                // is cut into matches that each start a new quantum. In a
                // stream every run is searched: its matches keep the text
                // from being cut inside them, where a scan resumed mid-run
                // would decode other quanta.
                let text = |r: &Range<usize>| {
                    more || r.len() > max || runs::may_decode_to_text(&hay.as_bytes()[r.clone()])
                };
                // Room for the `=` padding after the run.
                scratch.extend(
                    t.base64_runs
                        .iter()
                        .filter(|r| r.len() >= min && text(r))
                        .map(|r| r.start..(r.end + 3).min(hay.len())),
                );
                return Scope::Windows(scratch);
            }
        }
        let Some(g) = detector.group else {
            return if custom[i] { Scope::Whole } else { Scope::Skip };
        };
        if !t.hit[g] {
            return Scope::Skip;
        }
        if t.folded && detector.folds {
            return Scope::Whole;
        }
        match (self.groups[g].reach, self.groups[g].leading) {
            (Some(_), _) => Scope::Windows(t.windows.get(g).map_or(&[][..], Vec::as_slice)),
            (None, true) => Scope::Starts(t.starts.get(g).map_or(&[][..], Vec::as_slice)),
            (None, false) => Scope::Whole,
        }
    }

    /// Detectors without anchors that run in this scan: all of them but the
    /// custom regexes the RegexSet rules out.
    fn unanchored(&self, hay: &str, from: usize) -> Vec<bool> {
        let mut run: Vec<bool> = self
            .detectors
            .iter()
            .map(|d| {
                matches!(
                    d.trigger,
                    Trigger::Anchors | Trigger::LeadingAnchors | Trigger::WordAnchors
                ) && d.group.is_none()
            })
            .collect();
        if let Some((set, members)) = &self.custom_set {
            let matched = set.matches_at(hay, from);
            for (k, &index) in members.iter().enumerate() {
                run[index] = matched.matched(k);
            }
        }
        run
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
        self.scan_scoped(hay, from, more, decode, true)
    }

    /// What [`Scanner::scan`] finds when every triggered detector searches
    /// the whole text, as before windows: the reference windows must equal.
    #[cfg(test)]
    pub(super) fn scan_whole_text(&self, text: &str) -> Vec<Finding> {
        self.scan_scoped(text, 0, false, true, false).findings
    }

    fn scan_scoped(
        &self,
        hay: &str,
        from: usize,
        more: bool,
        decode: bool,
        windowed: bool,
    ) -> Window {
        // Decoded text (`decode` off) is scanned for data only.
        let triggers = self.triggers(hay, from, !decode);
        let unanchored = self.unanchored(hay, from);
        let mut pass = Pass {
            scanner: self,
            hay: Hay { text: hay, more },
            from,
            decode,
            windowed,
            open_from: hay.len(),
            spans: Vec::new(),
            candidates: Vec::new(),
            decoded: HashMap::new(),
        };
        // A stream cuts only outside every number run: a run's rules may
        // have been skipped for too few digits (validator minimums), and a
        // scan resumed inside a run could find what a one-shot scan, which
        // enters every run at its start, does not.
        if more {
            pass.spans
                .extend(triggers.numbers.iter().map(|r| r.range.clone()));
        }
        // One window over everything after `from` (a slice of one range,
        // not a range of positions).
        #[allow(clippy::single_range_in_vec_init)]
        let whole = [from..hay.len()];
        let mut scratch = Vec::new();
        for (i, detector) in self.detectors.iter().enumerate() {
            // Decoded text is scanned for the kind of data it carries
            // (`data_kind`); data findings are resolved apart from
            // injection ones, so injection rules cannot change the answer.
            if !decode && detector.kind.category() == Category::Injection {
                continue;
            }
            let windows: &[Range<usize>] =
                match self.scope(i, hay, more, &triggers, &unanchored, &mut scratch) {
                    Scope::Skip => continue,
                    Scope::Whole => &whole,
                    Scope::Windows(_) | Scope::Starts(_) if !windowed => &whole,
                    Scope::Windows(windows) => windows,
                    Scope::Starts(starts) => {
                        pass.run_from(detector, starts);
                        continue;
                    }
                };
            pass.run(detector, windows);
        }
        Window {
            findings: resolve(pass.candidates),
            open_from: pass.open_from,
            spans: pass.spans,
        }
    }
}

/// One scan's matches and their verdicts.
struct Pass<'a> {
    scanner: &'a Scanner,
    hay: Hay<'a>,
    from: usize,
    decode: bool,
    /// Not the whole-text reference scan of the tests, which runs every
    /// detector's regex.
    windowed: bool,
    open_from: usize,
    spans: Vec<Range<usize>>,
    candidates: Vec<Finding>,
    /// The data kind in each decoded text: the same blob (a JWT's header,
    /// a repeated token) is scanned once. Keyed by the decoded text, since
    /// most encoded runs are ruled out by the decoder's first look, for
    /// less than hashing them would cost.
    decoded: HashMap<String, Option<Kind>>,
}

impl Pass<'_> {
    /// Every match of `detector` inside `windows`: the same as searching
    /// the whole text, since every match lies inside one window. Each
    /// search sees the text before its window (look-behind for `\b` and
    /// validators) and ends with the window, which no match reaches.
    fn run(&mut self, detector: &Detector, windows: &[Range<usize>]) {
        let text = self.hay.text;
        let mut at = self.from;
        for window in windows {
            // Widened to whole characters: the regex reads characters.
            let end = ceil_boundary(text, window.end);
            let part = &text[..end];
            at = at.max(floor_boundary(text, window.start));
            while at <= end {
                let found = match detector.trigger {
                    Trigger::Base64 { min, max } if self.windowed => {
                        runs::base64_match(text, at, end, min, max)
                    }
                    _ => detector
                        .regex
                        .find(regex_automata::Input::new(part).range(at..))
                        .map(|m| m.range()),
                };
                let Some(r) = found else {
                    break;
                };
                if r.is_empty() {
                    at = r.end + text[r.end..].chars().next().map_or(1, char::len_utf8);
                    continue;
                }
                at = r.end;
                self.found(detector, r);
            }
        }
    }

    /// Every match of `detector` when each starts at one of `starts`
    /// (ordered): the same as searching the whole text, which finds the
    /// leftmost start that has a match, then goes on from its end. Each
    /// search reads only its match.
    fn run_from(&mut self, detector: &Detector, starts: &[usize]) {
        let text = self.hay.text;
        let mut at = self.from;
        for &start in starts {
            if start < at {
                continue;
            }
            let input = regex_automata::Input::new(text)
                .range(start..)
                .anchored(regex_automata::Anchored::Yes);
            let Some(r) = detector.regex.find(input).map(|m| m.range()) else {
                continue;
            };
            if r.is_empty() {
                continue;
            }
            at = r.end;
            self.found(detector, r);
        }
    }

    /// A match `r` of `detector`: its verdict, and the data inside it if
    /// the detector decodes its matches.
    fn found(&mut self, detector: &Detector, r: Range<usize>) {
        let text = self.hay.text;
        let more = self.hay.more;
        let near_end = |end: usize| more && end + LOOKAROUND >= text.len();
        if more {
            self.spans.push(r.clone());
        }
        if near_end(r.end) {
            self.open_from = self.open_from.min(r.start);
        }
        match (detector.check)(&self.hay, r.clone()) {
            Verdict::Accept(f)
                if f.start >= self.from && f.start < f.end && text.get(f.clone()).is_some() =>
            {
                if near_end(f.end) {
                    self.open_from = self.open_from.min(f.start);
                }
                if more {
                    self.spans.push(f.clone());
                }
                self.candidates.push(Finding {
                    kind: detector.kind,
                    rule: detector.rule.clone(),
                    range: f,
                });
            }
            Verdict::Pending => self.open_from = self.open_from.min(r.start),
            _ => {}
        }
        let Some((decoding, data_rule)) = detector.decode.as_ref().filter(|_| self.decode) else {
            return;
        };
        let Some(decoded) = (decoding.decode)(&text[r.clone()]) else {
            return;
        };
        if decoding.finding.is_some_and(|finding| finding(&decoded)) {
            self.candidates.push(Finding {
                kind: detector.kind,
                rule: detector.rule.clone(),
                range: r.clone(),
            });
        }
        let scanner = self.scanner;
        let kind = *self
            .decoded
            .entry(decoded)
            .or_insert_with_key(|decoded| scanner.data_kind(decoded));
        if let Some(kind) = kind {
            self.candidates.push(Finding {
                kind,
                rule: data_rule.clone(),
                range: r,
            });
        }
    }
}

/// Where a rule's matches hold an anchor hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Start {
    /// Anywhere, even inside a word.
    Any,
    /// At the match's start, at a word start ([`Trigger::LeadingAnchors`]).
    Leading,
    /// Somewhere in the match, at a word start ([`Trigger::WordAnchors`]).
    Word,
}

/// Anchor list (sorted), longest match, exactness, where the anchors sit
/// and the near words: detectors alike in all five share a group.
type GroupKey = (Vec<Vec<u8>>, Option<usize>, bool, Start, Option<Near>);

/// Anchors deduplicated (ASCII case folded where the prefilter ignores
/// case) and detectors grouped by their anchor list.
#[derive(Default)]
struct Groups {
    groups: Vec<Group>,
    by_anchors: HashMap<GroupKey, usize>,
    /// Each anchor, and whether it is matched case-sensitively.
    anchors: Vec<(Vec<u8>, bool)>,
    /// Per anchor, the groups it triggers.
    anchor_groups: Vec<Vec<usize>>,
    /// Distinct near sets.
    nears: Vec<Near>,
    /// Per anchor, the near sets it is a word of.
    anchor_nears: Vec<Vec<usize>>,
}

impl Groups {
    /// The group for a detector with these anchors and longest match;
    /// `None` without anchors. `exact`: the detector's regex matches the
    /// anchors only as written, so the case-sensitive automaton finds them.
    fn join(
        &mut self,
        words: &[&[u8]],
        max_len: Option<usize>,
        exact: bool,
        start: Start,
        near: Option<Near>,
    ) -> Option<usize> {
        let mut key: Vec<Vec<u8>> = words
            .iter()
            .map(|w| {
                if exact {
                    w.to_vec()
                } else {
                    w.to_ascii_lowercase()
                }
            })
            .collect();
        key.sort();
        key.dedup();
        if key.is_empty() {
            return None;
        }
        // A window per longest match: the digit rules share their anchors,
        // but the widest (IBAN) would make the others search four times
        // the text they need.
        let key = (key, max_len, exact, start, near);
        if let Some(&g) = self.by_anchors.get(&key) {
            return Some(g);
        }
        let g = self.groups.len();
        let near = near.map(|near| {
            let n = match self.nears.iter().position(|n| *n == near) {
                Some(n) => n,
                None => {
                    self.nears.push(near);
                    for word in near.words {
                        // Near words are matched ignoring ASCII case.
                        let at = self.anchor(word.to_ascii_lowercase().as_bytes(), false);
                        self.anchor_nears[at].push(self.nears.len() - 1);
                    }
                    self.nears.len() - 1
                }
            };
            n
        });
        self.groups.push(Group {
            reach: max_len,
            leading: start == Start::Leading,
            // A leading hit is at a word start too.
            word_start: start != Start::Any,
            near,
            ends: None,
        });
        for word in &key.0 {
            let at = self.anchor(word, exact);
            self.anchor_groups[at].push(g);
        }
        self.by_anchors.insert(key, g);
        Some(g)
    }

    /// The index of a prefilter literal, added if new.
    fn anchor(&mut self, word: &[u8], exact: bool) -> usize {
        if let Some(at) = self
            .anchors
            .iter()
            .position(|(a, e)| a == word && *e == exact)
        {
            return at;
        }
        self.anchors.push((word.to_vec(), exact));
        self.anchor_groups.push(Vec::new());
        self.anchor_nears.push(Vec::new());
        self.anchors.len() - 1
    }
}

/// A rule's regex: `regex::Regex`'s engine, with its literal prefilter
/// only where it pays, and `size_limit` as `RegexBuilder::size_limit`.
fn matcher(
    pattern: &str,
    prefilter: bool,
    size_limit: Option<usize>,
) -> Result<meta::Regex, String> {
    let mut config = meta::Config::new().auto_prefilter(prefilter);
    if let Some(limit) = size_limit {
        config = config
            .nfa_size_limit(Some(limit))
            .onepass_size_limit(Some(limit));
    }
    meta::Regex::builder()
        .configure(config)
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// The regex a built-in rule compiles to.
pub(super) fn builtin_pattern(spec: &Spec) -> String {
    let mut pattern = spec.pattern.to_owned();
    if spec.flexible_spaces {
        pattern = pattern.replace(' ', r"\s{1,8}");
    }
    // Every `\b` of a built-in rule sits next to an ASCII character of the
    // match, so the ASCII boundary differs from Unicode's only when the
    // character outside is a non-ASCII letter or digit ("éignore"), and
    // there it now counts as a boundary. The lazy DFA cannot evaluate a
    // Unicode `\b` once the text holds any non-ASCII byte and hands the
    // search to the PikeVM, which was most of the scan time
    // (rust-lang/regex#768).
    pattern.replace(r"\b", r"(?-u:\b)")
}

/// `lists[i]` of `len` lists, allocated on first use: most scans of
/// decoded text hit no anchor, and a list per group and near set, made up
/// front, was about 200 ns of the 500 such a scan takes.
fn list<T>(lists: &mut Vec<Vec<T>>, len: usize, i: usize) -> &mut Vec<T> {
    if lists.is_empty() {
        lists.resize_with(len, Vec::new);
    }
    &mut lists[i]
}

/// Appends a window, merging it into the last one when they overlap or
/// touch. Merged windows cover both; windows that still overlap an earlier
/// one, or come before it, are ordered and merged at the end of
/// [`Scanner::triggers`].
fn push_window(windows: &mut Vec<Range<usize>>, window: Range<usize>) {
    match windows.last_mut() {
        Some(last) if window.start <= last.end && window.end >= last.start => {
            last.start = last.start.min(window.start);
            last.end = last.end.max(window.end);
        }
        _ => windows.push(window),
    }
}

/// Where in `hay[from..]` a byte marked in `first` starts a non-ASCII
/// character: ASCII text is skipped eight bytes at a time.
fn lead_positions<'a>(
    hay: &'a [u8],
    from: usize,
    first: &'a [bool; 256],
) -> impl Iterator<Item = usize> + 'a {
    let mut at = from;
    std::iter::from_fn(move || loop {
        while let Some(word) = hay.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            if word & 0x8080_8080_8080_8080 != 0 {
                break;
            }
            at += 8;
        }
        let byte = *hay.get(at)?;
        at += 1;
        if first[usize::from(byte)] {
            return Some(at - 1);
        }
    })
}

/// Every literal of `trie` that starts at a word start in `hay[from..]`.
/// Fails only for a trie built without an anchored start.
fn walk_word_starts(
    WordTrie {
        dfa: trie,
        prefixes,
    }: &WordTrie,
    hay: &[u8],
    from: usize,
    mut hit: impl FnMut(aho_corasick::Match),
) -> Result<(), aho_corasick::MatchError> {
    use aho_corasick::automaton::Automaton;
    let start = trie.start_state(Anchored::Yes)?;
    // A block's word starts that pass the prefix filter, gathered without
    // a branch on the filter (it passes about one in six, unpredictably).
    let mut passed = [0usize; 64];
    for (base, mut starts) in word_start_masks(hay, from) {
        let mut n = 0;
        while starts != 0 {
            let at = base + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            passed[n] = at;
            n += usize::from(prefixes.may_start(hay, at));
        }
        for &at in &passed[..n] {
            let mut sid = start;
            for (end, &byte) in (at..).zip(&hay[at..]) {
                sid = trie.next_state(Anchored::Yes, sid, byte);
                if !trie.is_special(sid) {
                    continue;
                }
                if trie.is_dead(sid) {
                    break;
                }
                // A state's matches include literals that end here but
                // start after `at` (suffixes); those are walked from their
                // own start.
                for i in 0..trie.match_len(sid) {
                    let literal = trie.match_pattern(sid, i);
                    if end + 1 - trie.pattern_len(literal) == at {
                        hit(aho_corasick::Match::new(literal, at..end + 1));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Where words start in `hay[from..]`: word bytes with no word byte
/// before them, as a mask per 64-byte block (its first byte's position
/// and the mask). Found with [`classes::word`], with no branch per byte.
fn word_start_masks(hay: &[u8], from: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
    let mut next = from;
    let mut before = from > 0 && is_word_byte(hay[from - 1]);
    std::iter::from_fn(move || {
        let last = hay.len().min(next + 64).checked_sub(next + 1)?;
        let words = classes::mask(hay, next, classes::word);
        let starts = words & !((words << 1) | u64::from(before));
        before = words >> last & 1 == 1;
        let base = next;
        next += last + 1;
        Some((base, starts))
    })
}

/// The first four bytes of a set of literals, ASCII case folded and
/// hashed into a bit set (32 KiB, L1-sized): most word starts are ruled out
/// with one lookup, where walking the trie cost a few mispredicted branches
/// and a cache miss each (its DFA is over 200 KiB). Two bytes let 43% of
/// the word starts of the bench's text through ("no", "re", "co"), three
/// 16% ("for" of "forget", "sta" of "stands"), four 9% (14k of 157k per
/// MiB, where 9k literals start). A three-byte literal sets every key it
/// starts; those of one or two bytes, which would set a sixteenth of the
/// set each, are kept apart, by their two bytes (8 KiB).
struct Prefixes {
    four: Box<[u64; PREFIX_WORDS]>,
    short: Box<[u64; SHORT_WORDS]>,
}

const PREFIX_BITS: u32 = 18;
const PREFIX_WORDS: usize = 1 << (PREFIX_BITS - 6);
/// One bit per pair of bytes.
const SHORT_WORDS: usize = 1 << (16 - 6);

/// Bytes equal ignoring ASCII case are equal with bit 5 set: a folded
/// key never misses, and other bytes that share it or its hash only cost
/// a walk.
const FOLD: u32 = 0x2020_2020;

impl Prefixes {
    fn of(literals: &[Vec<u8>]) -> Prefixes {
        let mut set = Prefixes {
            four: Box::new([0; PREFIX_WORDS]),
            short: Box::new([0; SHORT_WORDS]),
        };
        let any = 0..=u8::MAX;
        for literal in literals {
            match literal[..] {
                [] => {}
                [a] => any.clone().for_each(|b| set.insert_short(a, b)),
                [a, b] => set.insert_short(a, b),
                [a, b, c] => any.clone().for_each(|d| set.insert(a, b, c, d)),
                [a, b, c, d, ..] => set.insert(a, b, c, d),
            }
        }
        set
    }

    fn key(word: u32) -> usize {
        // Fibonacci hashing: the top bits of the product.
        ((word | FOLD).wrapping_mul(0x9E37_79B1) >> (32 - PREFIX_BITS)) as usize
    }

    fn short_key(word: u32) -> usize {
        ((word | FOLD) & 0xFFFF) as usize
    }

    fn insert(&mut self, a: u8, b: u8, c: u8, d: u8) {
        let key = Prefixes::key(u32::from_le_bytes([a, b, c, d]));
        self.four[key / 64] |= 1 << (key % 64);
    }

    fn insert_short(&mut self, a: u8, b: u8) {
        let key = Prefixes::short_key(u32::from_le_bytes([a, b, 0, 0]));
        self.short[key / 64] |= 1 << (key % 64);
    }

    /// Whether some literal may start at `hay[at]`; bytes past the end
    /// read as 0, which no literal longer than the text can match anyway.
    fn may_start(&self, hay: &[u8], at: usize) -> bool {
        let word = match hay.get(at..at + 4) {
            // One load for the four bytes, but near the end.
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => {
                let byte = |i: usize| hay.get(i).copied().unwrap_or(0);
                u32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)])
            }
        };
        let (four, short) = (Prefixes::key(word), Prefixes::short_key(word));
        (self.four[four / 64] >> (four % 64) | self.short[short / 64] >> (short % 64)) & 1 != 0
    }
}

/// A hit with no word byte right before or right after it.
fn whole_word(hay: &[u8], hit: Range<usize>) -> bool {
    let before = hit.start > 0 && is_word_byte(hay[hit.start - 1]);
    let after = hay.get(hit.end).is_some_and(|&b| is_word_byte(b));
    !before && !after
}

/// The ASCII `\b` of the built-in patterns counts these as word bytes.
const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether a pattern matches its literals only as written: no case
/// folding anywhere in it.
fn case_sensitive(pattern: &str) -> bool {
    !pattern.contains("(?i")
}

/// Whether a pattern folds case with Unicode rules (see
/// [`Detector::folds`]); built-in data rules are ASCII (`(?-u)`).
fn folds(pattern: &str) -> bool {
    pattern.contains("(?i") && !pattern.starts_with("(?-u)")
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
/// Findings come out ordered by start, end and kind.
fn resolve(candidates: Vec<Finding>) -> Vec<Finding> {
    let (mut injection, mut data): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|f| f.category() == Category::Injection);
    let mut out = Vec::with_capacity(data.len() + injection.len());
    resolve_overlaps(&mut data, &mut out);
    resolve_overlaps(&mut injection, &mut out);
    // Two ordered lists: the stable sort merges them.
    out.sort_by(by_position);
    out
}

/// [`pick`] over each set of candidates that overlap one another, in order
/// of start. Picking in one set never looks at another, and a candidate
/// that overlaps nothing is kept as it is: most findings, which then skip
/// `pick`'s sort and map.
fn resolve_overlaps(candidates: &mut Vec<Finding>, out: &mut Vec<Finding>) {
    // Each detector's candidates come in order: runs the stable sort merges.
    candidates.sort_by(by_position);
    let mut set: Vec<Finding> = Vec::new();
    let mut set_end = 0;
    for f in candidates.drain(..) {
        if !set.is_empty() && f.range.start >= set_end {
            flush(&mut set, out);
        }
        set_end = if set.is_empty() {
            f.range.end
        } else {
            set_end.max(f.range.end)
        };
        set.push(f);
    }
    flush(&mut set, out);

    fn flush(set: &mut Vec<Finding>, out: &mut Vec<Finding>) {
        if set.len() == 1 {
            out.append(set);
        } else if !set.is_empty() {
            let mut kept = pick(std::mem::take(set));
            kept.sort_by_key(|f| f.range.start);
            out.append(&mut kept);
        }
    }
}

/// The order findings come out in: by start, end and kind.
fn by_position(a: &Finding, b: &Finding) -> std::cmp::Ordering {
    (a.range.start, a.range.end, a.kind).cmp(&(b.range.start, b.range.end, b.kind))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolving per set of overlapping candidates picks what one `pick`
    /// over all of them picks, in the same order: random candidates over a
    /// short text, so that sets of every size occur, with kinds of both
    /// categories and rules that tie on everything else.
    #[test]
    fn resolving_per_overlap_set_equals_one_pick() {
        let kinds = [
            Kind::Email,
            Kind::Phone,
            Kind::CreditCard,
            Kind::Jwt,
            Kind::Custom,
            Kind::InstructionOverride,
            Kind::RolePlayJailbreak,
        ];
        let rules: [Arc<str>; 3] = [Arc::from("b"), Arc::from("a"), Arc::from("c")];
        let mut next = crate::policy::guard::tests::xorshift(0x853C_49E6_748F_EA9Bu64);
        for case in 0..2000 {
            let candidates: Vec<Finding> = (0..next(12))
                .map(|_| {
                    let start = next(40);
                    Finding {
                        kind: kinds[next(kinds.len())],
                        rule: rules[next(rules.len())].clone(),
                        range: start..start + 1 + next(8),
                    }
                })
                .collect();
            let (injection, data): (Vec<_>, Vec<_>) = candidates
                .clone()
                .into_iter()
                .partition(|f| f.category() == Category::Injection);
            let mut want = pick(data);
            want.extend(pick(injection));
            want.sort_by(by_position);
            assert_eq!(resolve(candidates), want, "case {case}");
        }
    }

    fn naive_word_starts(hay: &[u8], from: usize) -> Vec<usize> {
        (from..hay.len())
            .filter(|&i| is_word_byte(hay[i]) && !(i > 0 && is_word_byte(hay[i - 1])))
            .collect()
    }

    #[test]
    fn word_starts_are_word_bytes_after_other_bytes() {
        let unit = "ab_9 x-y  Zé\u{200B}q1,(p)\n";
        let text: String = unit.repeat(12);
        for len in [0, 1, 2, 63, 64, 65, 127, 128, 129, text.len()] {
            let hay = &text.as_bytes()[..len];
            for from in [0, 1, 5, 63, 64, 65].into_iter().filter(|&f| f <= len) {
                assert_eq!(
                    word_start_masks(hay, from)
                        .flat_map(|(base, starts)| {
                            (0..64)
                                .filter(move |i| starts >> i & 1 == 1)
                                .map(move |i| base + i)
                        })
                        .collect::<Vec<_>>(),
                    naive_word_starts(hay, from),
                    "len {len} from {from}"
                );
            }
        }
    }

    /// The walk from word starts, with its pair filter, finds every literal
    /// that starts at a word start, ignoring ASCII case: what searching at
    /// every position finds.
    #[test]
    fn the_word_start_walk_finds_every_literal_at_a_word_start() {
        let mut words: Vec<Vec<u8>> = injection::specs()
            .iter()
            .flat_map(|s| {
                let near = s.near.map_or(&[][..], |n| n.words);
                s.anchors
                    .iter()
                    .map(|a| a.to_ascii_lowercase())
                    .chain(near.iter().map(|w| w.as_bytes().to_vec()))
                    .collect::<Vec<_>>()
            })
            .filter(|w| w.first().is_some_and(|&b| is_word_byte(b)))
            .collect();
        // One-byte and two-byte literals, and one a prefix of another.
        words.extend([b"q".to_vec(), b"x9".to_vec(), b"x9_z".to_vec()]);
        words.sort();
        words.dedup();
        let Ok(Literals::Trie(trie)) = Literals::word_trie(&words) else {
            panic!("word trie");
        };
        let texts = [
            include_str!("testdata/corpus.jsonl"),
            include_str!("testdata/tuning.jsonl"),
            "IGNORE all Previous rules; the NoW-new Rule: q x9_Z x9 qq _prompt \
             preprompt, pre-prompt ignoreignore 9ignore é-forget\u{212A}now",
            // Short literals at the end, where the prefix key reads zeros.
            "ends with x9",
            "ends with ai q",
        ];
        for text in texts {
            let hay = text.as_bytes();
            for from in [0, 1, 7] {
                let mut walked = Vec::new();
                walk_word_starts(&trie, hay, from, |m| {
                    walked.push((m.pattern().as_usize(), m.range()));
                })
                .unwrap();
                let mut want = Vec::new();
                for at in naive_word_starts(hay, from) {
                    for (i, w) in words.iter().enumerate() {
                        if hay[at..].len() >= w.len()
                            && hay[at..at + w.len()].eq_ignore_ascii_case(w)
                        {
                            want.push((i, at..at + w.len()));
                        }
                    }
                }
                walked.sort_by_key(|(i, r)| (r.start, r.end, *i));
                want.sort_by_key(|(i, r)| (r.start, r.end, *i));
                assert!(!want.is_empty());
                assert_eq!(walked, want, "from {from} in {:?}", &text[..40]);
            }
        }
    }
}
