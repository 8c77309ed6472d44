//! A built-in text embedding that needs no model server and no download:
//! the default for topic restrictions (`guard::TopicMatcher`) and for the
//! semantic cache when no embeddings endpoint is configured.
//!
//! # Why hashed features and not a neural model
//!
//! The gateway must work out of the box on machines that reach no model
//! hub, and the repository may carry at most a small data file. A neural
//! sentence encoder that fits in that budget does not exist, and one that
//! is trained here would be a data set of its own to maintain. So this is
//! the older, well-understood design of a hashed bag of features, made to
//! meet paraphrases halfway:
//!
//! - **Normalisation**: Unicode lower-casing, full-width ASCII folded to
//!   ASCII, apostrophes dropped inside words ("don't" → "dont"); words are
//!   runs of alphanumeric characters, and each CJK/Thai character is a word
//!   of its own (those scripts put no spaces between words).
//! - **Stop words** (English function words and the filler of prompts:
//!   "please", "how", "can you") are dropped: they carry no topic, and in a
//!   short question they would otherwise be most of the vector.
//! - **Light stemming** (plural, -ed, -ing, -ly, -ment, -ness, -ation,
//!   final e) so "lease", "leases" and "leasing" are one word. It is a
//!   suffix stripper, not a dictionary: it only has to map the forms of one
//!   word to one key, not to produce a real word.
//! - **Features**: each content word (weight 1), each pair of adjacent
//!   content words (some order: "stock market" ≠ "market stock"), the
//!   character trigrams of each word (morphology the stemmer misses,
//!   typos, languages it does not know), and, from a built-in lexicon
//!   (`embed_lexicon.txt`, 16 KB), a synonym-group feature
//!   (lawyer/attorney/solicitor meet) and a domain feature (sue, landlord
//!   and probate all say "law"). "will" is a stop word except where it is
//!   the document ("my will", "father's will").
//! - **Feature hashing** into [`DIM`] dimensions with a sign bit, so that
//!   colliding features cancel on average instead of adding up (the
//!   "hashing trick" of Weinberger et al.); lexicon features, which weigh
//!   most, are spread over several dimensions so that one unlucky word
//!   hashing onto them cannot pass for the whole domain. **Sublinear term
//!   frequency** (√count) keeps a word repeated fifty times in a long
//!   prompt from drowning the rest.
//! - **Two weightings** ([`Weights`]): [`Weights::GENERAL`] compares texts
//!   as texts (words and synonyms lead: the semantic cache), and
//!   [`Weights::TOPICAL`] asks what a text is about (the domain leads:
//!   topic restrictions), so that two legal questions meet even when they
//!   share no word. Vectors of different weightings are not comparable.
//!
//! What it cannot do, so thresholds should expect it: it is blind to
//! negation ("not legal" is near "legal"), to word order beyond pairs, to
//! intent carried by no topical word ("who pays if my dog bites a
//! neighbour?" is a liability question with no legal word in it), and to
//! synonyms the lexicon does not list; outside English it matches by shared
//! words and trigrams only. With [`Weights::GENERAL`] a paraphrase that
//! keeps its key words or their synonyms scores about 0.4–0.8 and an
//! unrelated text about 0, with two different questions on one subject in
//! between, so a semantic cache wants a high threshold and should expect
//! misses on paraphrases that change every word.
//!
//! # Determinism and cost
//!
//! The hash is FNV-1a (64-bit) followed by a SplitMix64 finaliser — fixed
//! constants, no per-process seed — and features are summed in the order
//! the text produces them, so a text has the same vector in every run, on
//! every platform (only `+`, `*`, `/` and `sqrt`, which IEEE 754 rounds
//! exactly). Cost is linear in the text: at most [`MAX_WORDS`] words are
//! read (the rest is ignored) and at most [`MAX_WORD_BYTES`] bytes of each
//! word. Callers that must see all of a long text (topic restrictions)
//! embed it in chunks.
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::OnceLock;

/// Dimension of every local embedding. 512 keeps the collision noise
/// between unrelated texts near 1/√512 ≈ 0.04 of cosine, small against
/// the thresholds in use, at 2 KiB a vector.
pub const DIM: usize = 512;

/// Words of a text read for one embedding; the rest is ignored. Bounds the
/// work (and the map of distinct features) per call.
pub const MAX_WORDS: usize = 4096;

/// Bytes of one word kept; longer runs (base64, minified code) are cut.
pub const MAX_WORD_BYTES: usize = 48;

/// Names this embedding ([`Weights::GENERAL`], features and lexicon
/// included). A semantic cache stores it beside its vectors and drops them
/// when it changes: vectors of two versions are not comparable.
pub const LOCAL_EMBEDDER_ID: &str = "trigate-local-hash-v1-512";

const LEXICON: &str = include_str!("embed_lexicon.txt");

/// How much each kind of feature weighs (a word's own feature is 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// A pair of adjacent content words.
    pub bigram: f32,
    /// All character trigrams of a word together (each gets this / √n, so
    /// a long word weighs no more than a short one).
    pub trigrams: f32,
    /// A lexicon synonym group the word belongs to.
    pub synonym: f32,
    /// A lexicon domain the word belongs to.
    pub domain: f32,
}

impl Weights {
    /// For comparing texts as texts (semantic cache): words and synonyms
    /// lead, the subject counts a little.
    pub const GENERAL: Weights = Weights {
        bigram: 0.5,
        trigrams: 0.5,
        synonym: 1.0,
        domain: 0.8,
    };
    /// For asking what a text is about (topic restrictions): the domain
    /// leads, so that two questions on one subject meet even when they
    /// share no word.
    pub const TOPICAL: Weights = Weights {
        bigram: 0.3,
        trigrams: 0.3,
        synonym: 1.0,
        domain: 2.5,
    };
}

const W_WORD: f32 = 1.0;

/// Dimensions each lexicon feature is spread over (see
/// `Accumulator::add_spread`).
const LEXICON_SLOTS: u8 = 8;

// Feature namespaces: one byte hashed before the feature's text.
const NS_WORD: u8 = b'w';
const NS_EXACT: u8 = b'x';
const NS_BIGRAM: u8 = b'b';
const NS_TRIGRAM: u8 = b't';
const NS_SYNONYM: u8 = b'~';
const NS_DOMAIN: u8 = b'@';

/// The built-in embedder: the lexicon, compiled once. Cheap to share
/// (`Send + Sync`); [`LocalEmbedder::shared`] is the process-wide one.
#[derive(Debug)]
pub struct LocalEmbedder {
    /// Key: the hash of a word (`NS_WORD`, stemmed), an exact form
    /// (`NS_EXACT`) or a pair (`NS_BIGRAM`), as the features are hashed.
    /// Value: the lexicon features it adds.
    lexicon: HashMap<u64, Vec<(u64, u8)>, BuildHasherDefault<PremixedHasher>>,
    weights: Weights,
}

impl Default for LocalEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalEmbedder {
    /// With [`Weights::GENERAL`].
    pub fn new() -> Self {
        Self::with_weights(Weights::GENERAL)
    }

    pub fn with_weights(weights: Weights) -> Self {
        let mut lexicon: HashMap<u64, Vec<(u64, u8)>, BuildHasherDefault<PremixedHasher>> =
            HashMap::default();
        for entry in parse_lexicon(LEXICON).entries {
            let list = lexicon.entry(entry.key).or_default();
            if !list.contains(&entry.feature) {
                list.push(entry.feature);
            }
        }
        LocalEmbedder { lexicon, weights }
    }

    /// The process-wide instance with [`Weights::GENERAL`], built on first
    /// use.
    pub fn shared() -> &'static LocalEmbedder {
        static SHARED: OnceLock<LocalEmbedder> = OnceLock::new();
        SHARED.get_or_init(LocalEmbedder::new)
    }

    /// The process-wide instance with [`Weights::TOPICAL`].
    pub fn topical() -> &'static LocalEmbedder {
        static TOPICAL: OnceLock<LocalEmbedder> = OnceLock::new();
        TOPICAL.get_or_init(|| LocalEmbedder::with_weights(Weights::TOPICAL))
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// The embedding of `text`: [`DIM`] values, L2 norm 1, or all zeros
    /// when the text has no content word (empty, punctuation, only stop
    /// words) — such a vector has cosine 0 with everything.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let words = words(text);
        // About a dozen features a word; sized once instead of regrown.
        let mut acc = Accumulator::with_capacity(words.len() * 12);
        let mut prev_stem: Option<String> = None;
        for (i, word) in words.iter().enumerate() {
            let w = word.text.as_str();
            if is_stop_word(w) && !is_testament(&words, i) {
                continue;
            }
            let stemmed = stem(w);
            let word_key = hash(NS_WORD, &[stemmed.as_bytes()]);
            acc.add(word_key, W_WORD);
            self.add_lexicon(&mut acc, word_key);
            self.add_lexicon(&mut acc, hash(NS_EXACT, &[w.as_bytes()]));
            add_trigrams(&mut acc, w, self.weights.trigrams);
            if let Some(prev) = &prev_stem {
                let pair = hash(NS_BIGRAM, &[prev.as_bytes(), b" ", stemmed.as_bytes()]);
                acc.add(pair, self.weights.bigram);
                self.add_lexicon(&mut acc, pair);
            }
            prev_stem = Some(stemmed.into_owned());
        }
        acc.into_vector()
    }

    fn add_lexicon(&self, acc: &mut Accumulator, key: u64) {
        if let Some(features) = self.lexicon.get(&key) {
            for &(feature, namespace) in features {
                let weight = match namespace {
                    NS_DOMAIN => self.weights.domain,
                    _ => self.weights.synonym,
                };
                acc.add_spread(feature, weight, LEXICON_SLOTS);
            }
        }
    }
}

/// Cosine similarity: 1 for the same direction, 0 for orthogonal or when
/// either vector is zero. Vectors of different length (from different
/// embedders) are not comparable and score 0.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
}

/// Keys that are already hashes (the lexicon's: fixed at start-up, so no
/// input can crowd its buckets) are used as they are.
#[derive(Default)]
struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// For the per-text feature map, whose keys come from the input: the key
/// mixed with a per-process secret, so that no one can choose words whose
/// features pile into one bucket. Cheaper than SipHash on a key that is
/// already a good hash.
#[derive(Clone, Copy)]
struct SeededMix {
    seed: u64,
}

impl SeededMix {
    fn new() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x0074_7269_6761_7465_u64));
        SeededMix { seed }
    }
}

impl BuildHasher for SeededMix {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher {
            seed: self.seed,
            h: self.seed,
        }
    }
}

struct MixHasher {
    seed: u64,
    h: u64,
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.h
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.h = finalise((self.h ^ u64::from(b)) ^ self.seed);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.h = finalise(n ^ self.seed);
    }
}

/// Features of one text, summed per feature in first-seen order (a
/// `HashMap` alone would sum in a per-process random order, and float
/// addition is not associative).
struct Accumulator {
    index: HashMap<u64, usize, SeededMix>,
    /// Feature, summed weight, count, slots.
    features: Vec<(u64, f32, u32, u8)>,
}

impl Accumulator {
    fn with_capacity(n: usize) -> Self {
        Accumulator {
            index: HashMap::with_capacity_and_hasher(n, SeededMix::new()),
            features: Vec::with_capacity(n),
        }
    }

    fn add(&mut self, feature: u64, weight: f32) {
        self.add_spread(feature, weight, 1);
    }

    /// A feature spread over `slots` dimensions (each getting 1/√slots of
    /// its value): a heavy feature in a single slot would make any word
    /// that happens to hash there look like it.
    fn add_spread(&mut self, feature: u64, weight: f32, slots: u8) {
        match self.index.get(&feature) {
            Some(&i) => {
                let f = &mut self.features[i];
                f.1 += weight;
                f.2 += 1;
            }
            None => {
                self.index.insert(feature, self.features.len());
                self.features.push((feature, weight, 1, slots));
            }
        }
    }

    fn into_vector(self) -> Vec<f32> {
        let mut v = vec![0.0f32; DIM];
        for (feature, sum, count, slots) in self.features {
            // Mean weight × √count: sublinear in repetitions.
            let value = sum / (count as f32).sqrt() / f32::from(slots).sqrt();
            for j in 0..u64::from(slots) {
                let h = if j == 0 {
                    feature
                } else {
                    finalise(feature ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                };
                let slot = (h % DIM as u64) as usize;
                if h >> 63 == 1 {
                    v[slot] -= value;
                } else {
                    v[slot] += value;
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}

fn add_trigrams(acc: &mut Accumulator, word: &str, total: f32) {
    // Over "<word>" so that beginnings and ends are features too.
    let chars: Vec<char> = std::iter::once('<')
        .chain(word.chars())
        .chain(std::iter::once('>'))
        .collect();
    if chars.len() < 3 {
        return;
    }
    let n = chars.len() - 2;
    let weight = total / (n as f32).sqrt();
    let mut buf = [0u8; 12];
    for window in chars.windows(3) {
        let mut len = 0;
        for c in window {
            len += c.encode_utf8(&mut buf[len..]).len();
        }
        acc.add(hash(NS_TRIGRAM, &[&buf[..len]]), weight);
    }
}

/// FNV-1a over the namespace byte and the parts, then SplitMix64's
/// finaliser: FNV's low bits (the slot) are weak on their own.
fn hash(namespace: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(namespace);
    for part in parts {
        for &b in *part {
            eat(b);
        }
    }
    finalise(h)
}

/// SplitMix64's finaliser.
fn finalise(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A normalised word of the text.
struct Word {
    text: String,
    /// Written with 's ("father's"): a noun, whatever follows.
    possessive: bool,
}

/// The normalised words of `text`, at most [`MAX_WORDS`].
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut word = String::with_capacity(MAX_WORD_BYTES + 4);
    // Length of `word` where an apostrophe was dropped.
    let mut apostrophe = None;
    let mut emit = |word: &mut String, apostrophe: &mut Option<usize>| {
        if !word.is_empty() && out.len() < MAX_WORDS {
            let possessive = *apostrophe == Some(word.len() - 1) && word.ends_with('s');
            out.push(Word {
                text: std::mem::take(word),
                possessive,
            });
        }
        word.clear();
        *apostrophe = None;
        out.len() < MAX_WORDS
    };
    for c in text.chars() {
        let c = fold_width(c);
        if is_apostrophe(c) && !word.is_empty() {
            apostrophe = Some(word.len());
            continue;
        }
        let more = if is_unspaced_script(c) {
            emit(&mut word, &mut apostrophe) && {
                word.push(c);
                emit(&mut word, &mut apostrophe)
            }
        } else if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                if word.len() + l.len_utf8() <= MAX_WORD_BYTES {
                    word.push(l);
                }
            }
            true
        } else {
            emit(&mut word, &mut apostrophe)
        };
        if !more {
            return out;
        }
    }
    emit(&mut word, &mut apostrophe);
    out
}

/// Is `words[i]` "will" the document rather than the modal verb (a stop
/// word)? Yes after a determiner ("a will", "my will"), a possessive
/// ("father's will") or an adjective of wills ("handwritten will"), unless
/// a verb-like word follows as after a modal ("the will be read" is rare,
/// "the company will be" is not, but "company" is no determiner).
fn is_testament(words: &[Word], i: usize) -> bool {
    if words[i].text != "will" || i == 0 {
        return false;
    }
    let prev = &words[i - 1];
    static DET: OnceLock<Vec<u128>> = OnceLock::new();
    static ADJ: OnceLock<Vec<u128>> = OnceLock::new();
    static MODAL: OnceLock<Vec<u128>> = OnceLock::new();
    let after_noun_marker = in_list(&DET, DETERMINERS, &prev.text)
        || prev.possessive
        || in_list(&ADJ, WILL_ADJECTIVES, &prev.text);
    let modal_follows = words
        .get(i + 1)
        .is_some_and(|next| in_list(&MODAL, MODAL_FOLLOWERS, &next.text));
    after_noun_marker && !modal_follows
}

const WILL_ADJECTIVES: &str =
    "handwritten holographic last living mutual new old online original signed valid written";

const MODAL_FOLLOWERS: &str = "be not never have also still always probably likely just";

/// Full-width forms of ASCII (U+FF01–FF5E), common in CJK input and a
/// cheap way to dodge keyword lists, read as ASCII.
fn fold_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{02BC}')
}

/// Scripts written without spaces between words: each character is taken
/// as a word (with pairs as bigrams), which is how CJK retrieval without a
/// dictionary commonly works.
fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0x0E00..=0x0E7F   // Thai
        | 0x0E80..=0x0EFF   // Lao
        | 0x1000..=0x109F   // Myanmar
        | 0x1780..=0x17FF   // Khmer
        | 0x20000..=0x2FA1F // CJK extensions B–F, compatibility supplement
    )
}

/// A suffix stripper in the spirit of Porter's first step: it joins the
/// inflected forms of an English word under one key. Words that are not
/// ASCII letters, or are short, are left alone.
fn stem(word: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if word.len() <= 3 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return Cow::Borrowed(word);
    }
    let mut s = word.to_owned();
    let has_vowel = |s: &str| s.bytes().any(|b| b"aeiouy".contains(&b));
    if s.ends_with("sses") {
        s.truncate(s.len() - 2);
    } else if s.ends_with("ies") && s.len() > 4 {
        s.truncate(s.len() - 3);
        s.push('y');
    } else if s.ends_with('s') && !s.ends_with("ss") && !s.ends_with("us") && !s.ends_with("is") {
        s.pop();
    }
    let mut verb = false;
    if s.ends_with("ied") && s.len() > 4 {
        s.truncate(s.len() - 3);
        s.push('y');
    } else if s.ends_with("ing") && s.len() >= 6 && has_vowel(&s[..s.len() - 3]) {
        s.truncate(s.len() - 3);
        verb = true;
    } else if s.ends_with("ed") && s.len() >= 5 && has_vowel(&s[..s.len() - 2]) {
        s.truncate(s.len() - 2);
        verb = true;
    }
    if verb {
        let b = s.as_bytes();
        let n = b.len();
        if n >= 2 && b[n - 1] == b[n - 2] && !b"aeiouylsz".contains(&b[n - 1]) {
            s.pop();
        }
    }
    for (suffix, min_rest, replacement) in [
        ("ly", 4, ""),
        ("ment", 4, ""),
        ("ness", 3, ""),
        ("ation", 3, "ate"),
    ] {
        if s.ends_with(suffix) && s.len() - suffix.len() >= min_rest {
            s.truncate(s.len() - suffix.len());
            s.push_str(replacement);
            break;
        }
    }
    if s.len() > 3 && s.ends_with('e') {
        s.pop();
    }
    Cow::Owned(s)
}

/// Before "will", these make it a noun. Not "this"/"that": "this will
/// help" is the modal.
const DETERMINERS: &str = "a the my your his her their our";

/// English function words, contractions (apostrophes already dropped) and
/// the filler of requests to an assistant. Sorted for binary search.
const STOP_WORDS: &str =
    "a about above actually after again against all also am an and any anyone anything are \
    arent as ask at be because been before being below between both but by can cannot cant \
    could couldnt did didnt do does doesnt doing dont down during each either else even ever \
    every few for from further get gets getting give go going got had hadnt happen happened \
    happens has hasnt have havent having he hello help her here hers herself hey hi him \
    himself his how hows i id if ill im in into is isnt it its itself ive just kind know let \
    lets like may me might more most much must my myself need needs no nor not now of off ok \
    okay on once one only or other ought our ours ourselves out over own please possible \
    quite rather really same shall she should shouldnt so some someone something sort still \
    such sure tell than thank thanks that thats the their theirs them themselves then there \
    theres these they theyre thing things think this those through to too under until up us \
    use using very want was wasnt way we were werent weve what whats when where wheres \
    whether which while who whom whos why will with without wont would wouldnt yes yet you \
    youd youll your youre yours yourself youve";

fn is_stop_word(word: &str) -> bool {
    static SET: OnceLock<Vec<u128>> = OnceLock::new();
    in_list(&SET, STOP_WORDS, word)
}

/// Is `word` one of the space-separated `list`? The list is packed into
/// sorted integers once, so a check is a binary search of integers, not
/// string comparisons on every word of every text.
fn in_list(set: &'static OnceLock<Vec<u128>>, list: &str, word: &str) -> bool {
    let packed = set.get_or_init(|| {
        let mut v: Vec<u128> = list.split_whitespace().filter_map(pack).collect();
        v.sort_unstable();
        v
    });
    pack(word).is_some_and(|p| packed.binary_search(&p).is_ok())
}

/// A word of at most 16 bytes as one integer (words hold no NUL, so no
/// two pack alike); longer words are no stop words.
fn pack(word: &str) -> Option<u128> {
    let bytes = word.as_bytes();
    if bytes.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(u128::from_be_bytes(buf))
}

/// One lexicon line's contribution: when `key` occurs, add `feature`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LexiconEntry {
    key: u64,
    /// The feature's hash and namespace (synonym or domain).
    feature: (u64, u8),
}

struct Lexicon {
    entries: Vec<LexiconEntry>,
    /// Lines that are neither blank, a comment nor `~name:`/`@name:`;
    /// a test keeps this empty.
    malformed: Vec<String>,
}

fn parse_lexicon(text: &str) -> Lexicon {
    let mut lexicon = Lexicon {
        entries: Vec::new(),
        malformed: Vec::new(),
    };
    // The domain that the synonym groups of the current section mark.
    let mut section: Option<u64> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = (!name.is_empty()).then(|| hash(NS_DOMAIN, &[name.as_bytes()]));
            continue;
        }
        let (head, words) = match line.split_once(':') {
            Some((head, words)) if head.len() > 1 => (head, words),
            _ => {
                lexicon.malformed.push(line.to_owned());
                continue;
            }
        };
        let namespace = match head.as_bytes()[0] {
            ns @ (NS_SYNONYM | NS_DOMAIN) => ns,
            _ => {
                lexicon.malformed.push(line.to_owned());
                continue;
            }
        };
        let feature = (hash(namespace, &[&head.as_bytes()[1..]]), namespace);
        for word in words.split_whitespace() {
            let key = if let Some(exact) = word.strip_prefix('=') {
                hash(NS_EXACT, &[exact.as_bytes()])
            } else if let Some((a, b)) = word.split_once('_') {
                hash(NS_BIGRAM, &[stem(a).as_bytes(), b" ", stem(b).as_bytes()])
            } else {
                hash(NS_WORD, &[stem(word).as_bytes()])
            };
            lexicon.entries.push(LexiconEntry { key, feature });
            if let (NS_SYNONYM, Some(domain)) = (namespace, section) {
                lexicon.entries.push(LexiconEntry {
                    key,
                    feature: (domain, NS_DOMAIN),
                });
            }
        }
    }
    lexicon
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        let e = LocalEmbedder::shared();
        cosine(&e.embed(a), &e.embed(b))
    }

    #[test]
    fn stop_words_are_sorted_and_short() {
        let words: Vec<&str> = STOP_WORDS.split_whitespace().collect();
        assert!(words.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        assert!(words.iter().all(|w| pack(w).is_some()), "at most 16 bytes");
        assert!(is_stop_word("the") && is_stop_word("youve") && !is_stop_word("lawyer"));
    }

    #[test]
    fn lexicon_parses_every_line() {
        let lexicon = parse_lexicon(LEXICON);
        assert!(lexicon.malformed.is_empty(), "{:?}", lexicon.malformed);
        assert!(lexicon.entries.len() > 500);
        let broken = parse_lexicon("lawyer attorney\n?x: a\n~ok: a b\n");
        assert_eq!(broken.malformed.len(), 2);
        assert_eq!(broken.entries.len(), 2);
        // In a section, a synonym group's words also mark its domain.
        let sectioned = parse_lexicon("[law]\n~x: a b\n@law: c\n[]\n~y: d\n");
        assert_eq!(sectioned.entries.len(), 2 * 2 + 1 + 1);
    }

    #[test]
    fn lexicon_words_are_not_stop_words() {
        // A stop word in the lexicon would never fire.
        for line in LEXICON.lines().filter(|l| l.starts_with(['~', '@'])) {
            let words = line.split_once(':').map(|(_, w)| w).unwrap_or("");
            for word in words.split_whitespace() {
                for part in word.trim_start_matches('=').split('_') {
                    assert!(!is_stop_word(part), "{part:?} in {line:?} is a stop word");
                }
            }
        }
    }

    #[test]
    fn stemming_joins_inflections() {
        for group in [
            &["lease", "leases", "leased", "leasing"][..],
            &["invoice", "invoices", "invoiced", "invoicing"],
            &["policy", "policies"],
            &["stop", "stopped", "stopping", "stops"],
            &["litigate", "litigation"],
            &["legal", "legally"],
            &["invest", "investment", "investments"],
            &["tax", "taxes"],
        ] {
            let first = stem(group[0]);
            for w in &group[1..] {
                assert_eq!(stem(w), first, "{w} vs {}", group[0]);
            }
        }
        // Short, non-ASCII and already-bare words stay as they are.
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("straße"), "straße");
        assert_eq!(stem("status"), "status");
    }

    #[test]
    fn vectors_are_unit_length_and_zero_without_content() {
        let e = LocalEmbedder::shared();
        let v = e.embed("How do I reset my password?");
        assert_eq!(v.len(), DIM);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        for empty in [
            "",
            "   ",
            "?!... ---",
            "what is it that you would",
            "🙂🙂🙂",
        ] {
            let v = e.embed(empty);
            assert!(v.iter().all(|x| *x == 0.0), "{empty:?}");
            assert_eq!(cosine(&v, &e.embed("password")), 0.0);
        }
    }

    #[test]
    fn cosine_edge_cases() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[], &[]), 0.0);
    }

    /// The same text gives the same bits, from a fresh embedder too (no
    /// per-process seed, no iteration-order dependence), and a checksum of
    /// one vector is pinned so a change of features or platform shows.
    #[test]
    fn embedding_is_deterministic() {
        let text = "My landlord won't return the deposit; can I take him to small claims court? 日本語のテキスト";
        let a = LocalEmbedder::shared().embed(text);
        let b = LocalEmbedder::new().embed(text);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let nonzero = a.iter().filter(|x| **x != 0.0).count();
        assert!(nonzero > 20, "{nonzero}");
        // FNV-1a over the bits: any change of features, lexicon, weights or
        // float behaviour on some platform shows here. A deliberate change
        // bumps LOCAL_EMBEDDER_ID (cached vectors become stale) and this.
        let checksum = a.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ u64::from(x.to_bits())).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(
            (LOCAL_EMBEDDER_ID, checksum),
            ("trigate-local-hash-v1-512", 13_665_695_880_115_991_135),
            "the local embedding changed"
        );
    }

    #[test]
    fn paraphrases_score_above_unrelated_texts() {
        // (a, paraphrase of a, unrelated to a)
        let cases = [
            (
                "How do I reset my password?",
                "I forgot my password, how can I change it?",
                "What's the capital of France?",
            ),
            (
                "Can I sue my landlord for not returning my deposit?",
                "Is it possible to take legal action against a landlord who kept my security deposit?",
                "How do I bake banana bread?",
            ),
            (
                "What is the best way to invest my savings?",
                "Where should I put my savings to grow them?",
                "How do I fix a segfault in my C program?",
            ),
            (
                "How do I cook rice on the stove?",
                "Stovetop rice: how do I cook it properly?",
                "What is a good index fund?",
            ),
            (
                "Cheap flights from Berlin to Rome",
                "inexpensive flight Berlin Rome",
                "How do I write a will?",
            ),
            (
                "Explain how to merge two branches in git",
                "How do I merge a git branch into another branch?",
                "What should I pack for a ski trip?",
            ),
        ];
        for (a, para, unrelated) in cases {
            let p = sim(a, para);
            let u = sim(a, unrelated);
            println!("{p:.3} paraphrase / {u:.3} unrelated: {a}");
            assert!(p >= 0.4, "paraphrase {p}: {a:?} / {para:?}");
            assert!(u < 0.15, "unrelated {u}: {a:?} / {unrelated:?}");
            assert!(p > u + 0.3);
        }
    }

    /// Two different questions on one subject sit between a paraphrase and
    /// an unrelated text: a semantic cache must not take one for the other.
    #[test]
    fn a_different_question_on_the_same_subject_is_not_a_paraphrase() {
        let cases = [
            (
                "Can I sue my landlord for not returning my deposit?",
                "Is it possible to take legal action against a landlord who kept my security deposit?",
                "How do I file for divorce in another state?",
            ),
            (
                "How do I cook rice on the stove?",
                "Stovetop rice: how do I cook it properly?",
                "How long do I bake a chicken in the oven?",
            ),
            (
                "What is the best way to invest my savings?",
                "Where should I put my savings to grow them?",
                "How do I calculate depreciation on a vehicle?",
            ),
        ];
        for (a, para, same_subject) in cases {
            let p = sim(a, para);
            let s = sim(a, same_subject);
            println!("{p:.3} paraphrase / {s:.3} same subject: {a}");
            assert!(p > s + 0.2, "{a:?}: paraphrase {p}, same subject {s}");
        }
    }

    #[test]
    fn synonyms_and_morphology_meet() {
        // No shared word at all: only the lexicon joins them.
        assert!(sim("lawyer", "attorney") > 0.3);
        assert!(sim("lawyer", "attorney") > sim("lawyer", "banana") + 0.3);
        // Only stemming and trigrams join these.
        assert!(sim("invoices overdue", "invoice overdue") > 0.9);
        assert!(sim("litigation", "litigating") > 0.3);
    }

    #[test]
    fn word_order_matters_a_little() {
        let same = sim("stock market crash", "stock market crash");
        let swapped = sim("stock market crash", "crash market stock");
        assert!((same - 1.0).abs() < 1e-5);
        assert!(swapped < same && swapped > 0.7, "{swapped}");
    }

    #[test]
    fn odd_input_is_bounded_and_does_not_panic() {
        let e = LocalEmbedder::shared();
        let inputs = [
            "\u{202E}gal advice\u{202C} مرحبا كيف يمكنني مقاضاة صاحب العمل",
            "שלום, אני צריך עורך דין",
            "👨‍👩‍👧‍👦🔥💯 emoji only? 🙃",
            "Ｌａｗｙｅｒ ｎｅｅｄｅｄ",
            "\u{0}\u{1}\u{7f}\u{fffd}\u{feff}",
            "ﬁnance ǅ İstanbul ß",
            "สวัสดีครับ ผมต้องการทนายความ",
        ];
        for text in inputs {
            let v = e.embed(text);
            assert_eq!(v.len(), DIM);
            assert!(v.iter().all(|x| x.is_finite()));
        }
        // Full-width letters read as ASCII.
        assert!(sim("Ｌａｗｙｅｒ ｎｅｅｄｅｄ", "lawyer needed") > 0.99);
        // A huge text: only MAX_WORDS words are read, so a prefix of that
        // many words has the same vector as the whole.
        let word = "alpha beta gamma delta ";
        let huge = word.repeat(MAX_WORDS);
        let prefix = word.repeat(MAX_WORDS / 4);
        assert_eq!(e.embed(&huge), e.embed(&prefix));
        assert!(sim(&huge, "alpha beta") > 0.5);
        // One enormous "word" is cut, not hashed whole.
        let blob = "x".repeat(1 << 20);
        assert!(sim(&blob, &"x".repeat(MAX_WORD_BYTES)) > 0.999);
    }
}
