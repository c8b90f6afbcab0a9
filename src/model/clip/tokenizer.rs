//! CLIP byte-level BPE tokenizer: a port of open_clip's `SimpleTokenizer` (`clean="lower"`), the
//! tokenizer MVFA uses for its prompts (spec 3.4 step 1).
//!
//! Pipeline, as in open_clip `tokenizer.py`:
//! 1. clean-up: `ftfy.fix_text` (see below), `html.unescape` twice, whitespace collapse, strip,
//!    lower-case;
//! 2. split with the (case-insensitive) pattern
//!    `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`;
//! 3. map each piece's UTF-8 bytes through the `bytes_to_unicode` table, append `</w>` to the last
//!    symbol, apply the BPE merges by rank, look the symbols up in the 49408-entry vocabulary.
//!
//! The special tokens are spelled `<start_of_text>` / `<end_of_text>` as in open_clip (ids 49406 /
//! 49407, the same ids OpenAI CLIP calls `<|startoftext|>` / `<|endoftext|>`). Consequently a
//! literal `<|startoftext|>` in user text is tokenised as ordinary punctuation and letters (as
//! open_clip does), while a literal `<start_of_text>` becomes id 49406 (also as open_clip does).
//!
//! ## What of `ftfy.fix_text` (ftfy 6.3, default config) is replicated
//! Per line, repeated until nothing changes: the semicolon-only HTML entity decoding (including
//! ftfy's all-caps forms such as `&EACUTE;`, and the "auto" rule that switches it off for the
//! rest of the text once a line contains `<`), C1 controls read as Windows-1252, Latin
//! ligatures, half/full-width forms, curly quotes, line breaks, ANSI terminal escapes, control
//! characters, NFC normalisation. **Not replicated:** mojibake repair (`fix_encoding`, e.g.
//! `"Ã©"` → `"é"`, and its `restore_byte_a0`/`replace_lossy_sequences`/`decode_inconsistent_utf8`
//! heuristics) and surrogate repair (a Rust `&str` cannot hold surrogates). On clean text,
//! including everything the prompt ensemble produces, fix_text is a no-op, so this only matters
//! for garbled user input. The Unicode tables are those of the Rust crates (`regex`,
//! `unicode-normalization`, `char::to_lowercase`), which may be newer than Python's; this can
//! only matter for characters assigned in recent Unicode versions.
//!
//! Differences in behaviour from open_clip, on purpose: [`ClipTokenizer::tokenize`] returns an
//! error for a text that does not fit the context instead of silently truncating it.
use std::collections::HashMap;
use std::io::Read;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// The BPE merge list of OpenAI CLIP (via open_clip), see `assets/README.md`.
static BUNDLED_BPE_GZ: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");
/// HTML5 entity names for `html.unescape` and ftfy, see `assets/README.md`.
static HTML_ENTITIES_TSV: &str = include_str!("../../../assets/html_entities.tsv");

/// Id of the start-of-text token (`<start_of_text>`, OpenAI's `<|startoftext|>`).
pub const SOT_TOKEN: u32 = 49406;
/// Id of the end-of-text token (`<end_of_text>`, OpenAI's `<|endoftext|>`).
pub const EOT_TOKEN: u32 = 49407;
/// Id used to pad a tokenised text up to the context length.
pub const PAD_TOKEN: u32 = 0;
/// Context length of every CLIP text tower.
pub const CONTEXT_LENGTH: usize = 77;
/// Vocabulary size: 256 byte symbols, 256 word-final byte symbols, 48894 merges, 2 specials.
pub const VOCAB_SIZE: usize = 49408;
/// Number of merges the reference reads: lines `1..49152-256-2+1` of the merge file.
const NUM_MERGES: usize = 49152 - 256 - 2;
/// Bound on the BPE cache; the cache is cleared when it is full (the reference's is unbounded,
/// which only matters for memory, not for the ids).
const BPE_CACHE_LIMIT: usize = 100_000;

const SPECIAL_TOKENS: [&str; 2] = ["<start_of_text>", "<end_of_text>"];
const SPLIT_PATTERN: &str =
    r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Errors of tokenisation and of loading a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A text needs more than `context_length` tokens including start and end.
    #[error(
        "text {index} needs {tokens} tokens including start/end but the context holds {context_length} \
         (open_clip would truncate it silently; shorten the text): {preview:?}"
    )]
    TooLong {
        /// Position of the text in the batch.
        index: usize,
        /// Tokens it needs, start and end included.
        tokens: usize,
        /// The context length asked for.
        context_length: usize,
        /// The first characters of the text.
        preview: String,
    },
    /// The context cannot even hold the start and end tokens.
    #[error("context length {0} is too small: it must hold at least the start and end tokens (2)")]
    ContextTooShort(usize),
    /// The BPE merge file is unreadable or malformed.
    #[error("BPE vocabulary {source_name}: {problem}")]
    BadVocabulary {
        /// Where the vocabulary came from.
        source_name: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// CLIP BPE tokenizer. Cheap to share (`&self` everywhere, the BPE cache is behind a mutex).
pub struct ClipTokenizer {
    /// Vocabulary string -> id (later duplicates win, as in the reference's `dict(zip(...))`).
    encoder: HashMap<String, u32>,
    /// Id -> vocabulary string.
    decoder: Vec<String>,
    /// (left id, right id) -> (merge rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte -> id of its single-symbol vocabulary entry, without and with `</w>`.
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    /// `bytes_to_unicode` inverse, for decoding.
    byte_decoder: HashMap<char, u8>,
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.decoder.len())
            .field("merges", &self.merges.len())
            .finish()
    }
}

impl Default for ClipTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

/// open_clip's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the others to
/// U+0100 upwards, so that every byte is a visible, non-whitespace symbol. Returned as
/// `(byte, symbol)` in the reference's dict order (printable ranges first), which is the order of
/// the first 256 (and next 256) vocabulary ids.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| {
            let c = char::from_u32(c).expect("bytes_to_unicode yields valid code points");
            (b as u8, c)
        })
        .collect()
}

impl ClipTokenizer {
    /// Tokenizer with the bundled OpenAI CLIP vocabulary (no file needed at run time).
    pub fn new() -> Self {
        // The bundled asset is fixed at compile time and checked by tests/tokenizer.rs; failing
        // here is a build defect, not bad input.
        Self::from_bpe_gz(BUNDLED_BPE_GZ, "bundled bpe_simple_vocab_16e6.txt.gz")
            .expect("the bundled CLIP BPE vocabulary is valid")
    }

    /// Tokenizer from a gzipped merge file in the `bpe_simple_vocab_16e6.txt.gz` format (a
    /// header line, then at least 48894 lines `left right`). `source_name` names it in errors.
    pub fn from_bpe_gz(gz: &[u8], source_name: &str) -> Result<Self, TokenizeError> {
        let bad = |problem: String| TokenizeError::BadVocabulary {
            source_name: source_name.to_string(),
            problem,
        };
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("cannot gunzip as UTF-8 text: {e}")))?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < NUM_MERGES + 1 {
            return Err(bad(format!(
                "has {} lines, expected a header and at least {NUM_MERGES} merges",
                lines.len()
            )));
        }
        let mut merge_pairs = Vec::with_capacity(NUM_MERGES);
        for (i, line) in lines[1..=NUM_MERGES].iter().enumerate() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merge_pairs.push((a, b)),
                _ => return Err(bad(format!("line {} is not `left right`: {line:?}", i + 2))),
            }
        }

        let byte_chars = bytes_to_unicode();
        let mut vocab: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        vocab.extend(byte_chars.iter().map(|(_, c)| c.to_string()));
        vocab.extend(byte_chars.iter().map(|(_, c)| format!("{c}</w>")));
        vocab.extend(merge_pairs.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
        let mut encoder = HashMap::with_capacity(vocab.len());
        for (id, s) in vocab.iter().enumerate() {
            encoder.insert(s.clone(), id as u32);
        }
        let mut merges = HashMap::with_capacity(merge_pairs.len());
        for (rank, (a, b)) in merge_pairs.iter().enumerate() {
            let (Some(&ia), Some(&ib)) = (encoder.get(*a), encoder.get(*b)) else {
                // The reference would never form this pair either: BPE symbols are always
                // vocabulary entries.
                continue;
            };
            let merged = encoder[&format!("{a}{b}")];
            merges.insert((ia, ib), (rank as u32, merged));
        }
        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for &(b, c) in &byte_chars {
            byte_ids[b as usize] = encoder[&c.to_string()];
            byte_end_ids[b as usize] = encoder[&format!("{c}</w>")];
        }
        let byte_decoder = byte_chars.iter().map(|&(b, c)| (c, b)).collect();
        Ok(Self {
            encoder,
            decoder: vocab,
            merges,
            byte_ids,
            byte_end_ids,
            byte_decoder,
            pattern: Regex::new(SPLIT_PATTERN).expect("the split pattern is a valid regex"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Number of ids (49408 for the bundled vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// Token ids of `text` after clean-up, without start/end tokens or padding
    /// (open_clip `SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_lower(text);
        let mut ids = Vec::new();
        for piece in self.pattern.find_iter(&cleaned) {
            let piece = piece.as_str();
            if let Some(i) = SPECIAL_TOKENS.iter().position(|s| *s == piece) {
                ids.push(self.encoder[SPECIAL_TOKENS[i]]);
                continue;
            }
            ids.extend(self.bpe(piece));
        }
        ids
    }

    /// Tokenises a batch: each row is `[49406, ids.., 49407, 0, 0, ..]` of length
    /// `context_length` (77 for CLIP). Unlike open_clip, which silently truncates, a text needing
    /// more than `context_length` tokens (start and end included) is an error naming the text.
    pub fn tokenize(
        &self,
        texts: &[&str],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>, TokenizeError> {
        if context_length < 2 {
            return Err(TokenizeError::ContextTooShort(context_length));
        }
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let ids = self.encode(text);
                let tokens = ids.len() + 2;
                if tokens > context_length {
                    return Err(TokenizeError::TooLong {
                        index,
                        tokens,
                        context_length,
                        preview: text.chars().take(60).collect(),
                    });
                }
                let mut row = Vec::with_capacity(context_length);
                row.push(SOT_TOKEN);
                row.extend(ids);
                row.push(EOT_TOKEN);
                row.resize(context_length, PAD_TOKEN);
                Ok(row)
            })
            .collect()
    }

    /// Text of `ids` (open_clip `decode`): word ends become spaces, invalid UTF-8 becomes U+FFFD.
    /// Unknown ids are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let joined: String = ids
            .iter()
            .filter_map(|&id| self.decoder.get(id as usize))
            .map(String::as_str)
            .collect();
        let mut bytes = Vec::with_capacity(joined.len());
        // `</w>` is ASCII and every ASCII printable maps to itself, so decode symbol by symbol and
        // turn `</w>` into a space afterwards, as the reference does.
        for c in joined.chars() {
            match self.byte_decoder.get(&c) {
                Some(&b) => bytes.push(b),
                None => bytes.extend(c.to_string().as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ")
    }

    /// Byte-level BPE of one pre-tokenised piece, cached.
    fn bpe(&self, piece: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.lock().ok().and_then(|c| c.get(piece).cloned()) {
            return ids;
        }
        let bytes = piece.as_bytes();
        let mut word: Vec<u32> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if i + 1 == bytes.len() {
                    self.byte_end_ids[b as usize]
                } else {
                    self.byte_ids[b as usize]
                }
            })
            .collect();
        while word.len() > 1 {
            // The adjacent pair with the lowest merge rank.
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(r, m)| (r, w[0], w[1], m))
                })
                .min_by_key(|&(r, ..)| r);
            let Some((_, first, second, merged)) = best else {
                break;
            };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= BPE_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(piece.to_string(), word.clone());
        }
        word
    }
}

// ------------------------------------------------------------------------------------------
// Clean-up: ftfy.fix_text (partial, see the module docs), html.unescape x2, whitespace, lower.
// ------------------------------------------------------------------------------------------

/// open_clip `_clean_lower`: `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean_lower(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let collapsed = py_split_whitespace(&unescaped)
        .collect::<Vec<_>>()
        .join(" ");
    collapsed.to_lowercase()
}

/// Python's `str.isspace` set: Unicode White_Space plus the information separators U+1C..U+1F.
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no arguments.
fn py_split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_is_space).filter(|w| !w.is_empty())
}

struct Entities {
    /// `html.entities.html5` (names with and without `;`).
    html5: HashMap<String, String>,
    /// ftfy's `HTML_ENTITIES`, keyed without `&`.
    ftfy: HashMap<String, String>,
}

static ENTITIES: LazyLock<Entities> = LazyLock::new(|| {
    let mut html5 = HashMap::new();
    let mut ftfy = HashMap::new();
    for line in HTML_ENTITIES_TSV.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(name), Some(cps), Some(flags)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let value: String = cps
            .split(' ')
            .filter_map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
            .collect();
        if flags.contains('h') {
            html5.insert(name.to_string(), value.clone());
        }
        if flags.contains('f') {
            ftfy.insert(name.to_string(), value);
        }
    }
    Entities { html5, ftfy }
});

static HTML_CHARREF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
        .expect("valid charref regex")
});
static FTFY_ENTITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid entity regex"));
static ANSI_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("valid ANSI regex"));

/// Windows-1252 reading of the C1 range U+80..U+9F (undefined bytes keep their code point), as
/// used by both `html.unescape` (`_invalid_charrefs`) and ftfy (`sloppy-windows-1252`).
const WIN1252_C1: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}', '\u{017D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{9D}', '\u{017E}', '\u{0178}',
];

/// Python's `html.unescape` (3.11): numeric references with the HTML5 replacement rules, named
/// references from the HTML5 table, including the longest-prefix rule for legacy names without
/// `;` (`&copy2024` -> `©2024`).
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let entities = &*ENTITIES;
    HTML_CHARREF
        .replace_all(s, |caps: &regex::Captures| {
            let r = &caps[1];
            if let Some(num) = r.strip_prefix('#') {
                let num = num.trim_end_matches(';');
                let value = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => num.parse::<u64>().ok(),
                };
                // Overflowing u64 means "far above U+10FFFF".
                let num = value.unwrap_or(u64::MAX);
                numeric_charref(num)
            } else if let Some(v) = entities.html5.get(r) {
                v.clone()
            } else {
                // Longest prefix of length >= 2 that is an entity (only legacy names qualify).
                let boundaries: Vec<usize> = r.char_indices().map(|(i, _)| i).skip(2).collect();
                for &end in boundaries.iter().rev() {
                    if let Some(v) = entities.html5.get(&r[..end]) {
                        return format!("{v}{}", &r[end..]);
                    }
                }
                format!("&{r}")
            }
        })
        .into_owned()
}

/// `html._replace_charref` for a numeric reference.
fn numeric_charref(num: u64) -> String {
    match num {
        0 => "\u{FFFD}".to_string(),
        0x0D => "\r".to_string(),
        0x80..=0x9F => WIN1252_C1[(num - 0x80) as usize].to_string(),
        0xD800..=0xDFFF => "\u{FFFD}".to_string(),
        n if n > 0x10FFFF => "\u{FFFD}".to_string(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        n if (n & 0xFFFE) == 0xFFFE => String::new(),
        n => char::from_u32(n as u32)
            .map(String::from)
            .unwrap_or_default(),
    }
}

/// ftfy's `unescape_html`: only `&name;` / `&#..;` forms, names from ftfy's table (with its
/// all-caps variants); a numeric reference is kept when its expansion still contains `;`.
fn ftfy_unescape_html(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let entities = &*ENTITIES;
    FTFY_ENTITY
        .replace_all(s, |caps: &regex::Captures| {
            let m = &caps[0];
            if let Some(v) = entities.ftfy.get(&m[1..]) {
                v.clone()
            } else if m.starts_with("&#") {
                let u = html_unescape(m);
                if u.contains(';') { m.to_string() } else { u }
            } else {
                m.to_string()
            }
        })
        .into_owned()
}

/// ftfy's Latin ligature table.
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{132}' => "IJ",
        '\u{133}' => "ij",
        '\u{149}' => "\u{2BC}n",
        '\u{1F1}' => "DZ",
        '\u{1F2}' => "Dz",
        '\u{1F3}' => "dz",
        '\u{1C4}' => "D\u{17D}",
        '\u{1C5}' => "D\u{17E}",
        '\u{1C6}' => "d\u{17E}",
        '\u{1C7}' => "LJ",
        '\u{1C8}' => "Lj",
        '\u{1C9}' => "lj",
        '\u{1CA}' => "NJ",
        '\u{1CB}' => "Nj",
        '\u{1CC}' => "nj",
        '\u{FB00}' => "ff",
        '\u{FB01}' => "fi",
        '\u{FB02}' => "fl",
        '\u{FB03}' => "ffi",
        '\u{FB04}' => "ffl",
        '\u{FB05}' => "\u{17F}t",
        '\u{FB06}' => "st",
        _ => return None,
    })
}

/// ftfy's `remove_control_chars` set.
fn is_ftfy_control(c: char) -> bool {
    matches!(c,
        '\u{00}'..='\u{08}' | '\u{0B}' | '\u{0E}'..='\u{1F}' | '\u{7F}'
        | '\u{206A}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}')
}

/// One pass of ftfy's fixers (minus `fix_encoding`) over one segment, in ftfy's order.
fn ftfy_pass(text: &str, unescape: bool) -> String {
    let mut t = if unescape {
        ftfy_unescape_html(text)
    } else {
        text.to_string()
    };
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        // fix_c1_controls
        if ('\u{80}'..='\u{9F}').contains(&c) {
            out.push(WIN1252_C1[c as usize - 0x80]);
        } else {
            out.push(c);
        }
    }
    t = out;
    // fix_latin_ligatures
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match latin_ligature(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    t = out;
    // fix_character_width: U+3000 -> space, U+FF01..U+FFEF -> their NFKC form.
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{FF01}'..='\u{FFEF}').contains(&c) {
            out.extend(std::iter::once(c).nfkc());
        } else {
            out.push(c);
        }
    }
    t = out;
    // uncurl_quotes
    t = t
        .chars()
        .map(|c| match c {
            '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            c => c,
        })
        .collect();
    // fix_line_breaks
    t = t
        .replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    // fix_surrogates: nothing to do, a Rust string holds no surrogates.
    // remove_terminal_escapes
    t = ANSI_ESCAPE.replace_all(&t, "").into_owned();
    // remove_control_chars
    t.retain(|c| !is_ftfy_control(c));
    // NFC
    t.nfc().collect()
}

/// `ftfy.fix_text` with the default configuration, minus mojibake repair (module docs): the
/// text is fixed line by line (segments end after `\n`), each segment until it stops changing.
pub fn fix_text(text: &str) -> String {
    let mut unescape = true; // "auto": switched off for good once a segment contains '<'
    let mut out = String::with_capacity(text.len());
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        let mut current = segment.to_string();
        loop {
            let next = ftfy_pass(&current, unescape);
            if next == current {
                break;
            }
            current = next;
        }
        out.push_str(&current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_reference_layout() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        assert_eq!(t[0], (b'!', '!'));
        assert_eq!(t[64], (b'a', 'a'));
        let map: std::collections::HashMap<u8, char> = t.into_iter().collect();
        assert_eq!(map[&0], '\u{100}');
        assert_eq!(map[&b' '], '\u{120}');
        assert_eq!(map[&0xAD], '\u{143}');
    }

    #[test]
    fn html_unescape_follows_python() {
        assert_eq!(html_unescape("&amp; &lt;3 &#39;"), "& <3 '");
        assert_eq!(html_unescape("&copy2024 &nosuch;"), "\u{a9}2024 &nosuch;");
        assert_eq!(
            html_unescape("&#128;&#0;&#x1F642;"),
            "\u{20ac}\u{fffd}\u{1F642}"
        );
    }

    #[test]
    fn fix_text_is_identity_on_clean_text() {
        let s = "a bad photo of a Brain without flaw.";
        assert_eq!(fix_text(s), s);
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
    }
}
