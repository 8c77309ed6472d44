//! What a scan reports. A finding carries a position, never the text it
//! points at, so findings can be logged, counted and compared freely.
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A detector's kind: the stable name used in config, placeholders
/// (`<CREDIT_CARD_1>`) and metric labels (`credit_card`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    Ipv4,
    Ipv6,
    AwsAccessKey,
    OpenaiKey,
    AnthropicKey,
    GithubToken,
    GitlabToken,
    Jwt,
    PrivateKey,
    SlackToken,
    GoogleApiKey,
    /// "Ignore all previous instructions", prompt-leak requests, chat
    /// template markers smuggled into user text.
    InstructionOverride,
    /// Persona jailbreaks: DAN, "developer mode", "pretend you have no
    /// restrictions".
    RolePlayJailbreak,
    /// Invisible or look-alike characters: zero-width, bidi controls,
    /// Unicode tag characters, fullwidth Latin words. Text spelled in tag
    /// characters is also scanned for data (found as that data's kind).
    HiddenText,
    /// Base64 blobs that decode to readable instructions. Blobs that decode
    /// to text are also scanned for data (an email inside is an `email`
    /// finding over the blob).
    EncodedPayload,
    /// An operator's own rule (`custom[]`); the rule name says which.
    Custom,
}

impl Kind {
    /// Every built-in detector, the default set.
    pub const BUILTIN: [Kind; 20] = [
        Kind::Email,
        Kind::Phone,
        Kind::CreditCard,
        Kind::Iban,
        Kind::UsSsn,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::AwsAccessKey,
        Kind::OpenaiKey,
        Kind::AnthropicKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::SlackToken,
        Kind::GoogleApiKey,
        Kind::InstructionOverride,
        Kind::RolePlayJailbreak,
        Kind::HiddenText,
        Kind::EncodedPayload,
    ];

    /// The config and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::Iban => "iban",
            Kind::UsSsn => "us_ssn",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::OpenaiKey => "openai_key",
            Kind::AnthropicKey => "anthropic_key",
            Kind::GithubToken => "github_token",
            Kind::GitlabToken => "gitlab_token",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private_key",
            Kind::SlackToken => "slack_token",
            Kind::GoogleApiKey => "google_api_key",
            Kind::InstructionOverride => "instruction_override",
            Kind::RolePlayJailbreak => "role_play_jailbreak",
            Kind::HiddenText => "hidden_text",
            Kind::EncodedPayload => "encoded_payload",
            Kind::Custom => "custom",
        }
    }

    /// The placeholder spelling (`CREDIT_CARD`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::Iban => "IBAN",
            Kind::UsSsn => "US_SSN",
            Kind::Ipv4 => "IPV4",
            Kind::Ipv6 => "IPV6",
            Kind::AwsAccessKey => "AWS_ACCESS_KEY",
            Kind::OpenaiKey => "OPENAI_KEY",
            Kind::AnthropicKey => "ANTHROPIC_KEY",
            Kind::GithubToken => "GITHUB_TOKEN",
            Kind::GitlabToken => "GITLAB_TOKEN",
            Kind::Jwt => "JWT",
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::SlackToken => "SLACK_TOKEN",
            Kind::GoogleApiKey => "GOOGLE_API_KEY",
            Kind::InstructionOverride => "INSTRUCTION_OVERRIDE",
            Kind::RolePlayJailbreak => "ROLE_PLAY_JAILBREAK",
            Kind::HiddenText => "HIDDEN_TEXT",
            Kind::EncodedPayload => "ENCODED_PAYLOAD",
            Kind::Custom => "CUSTOM",
        }
    }

    pub fn category(self) -> Category {
        match self {
            Kind::Email
            | Kind::Phone
            | Kind::CreditCard
            | Kind::Iban
            | Kind::UsSsn
            | Kind::Ipv4
            | Kind::Ipv6 => Category::Pii,
            Kind::AwsAccessKey
            | Kind::OpenaiKey
            | Kind::AnthropicKey
            | Kind::GithubToken
            | Kind::GitlabToken
            | Kind::Jwt
            | Kind::PrivateKey
            | Kind::SlackToken
            | Kind::GoogleApiKey => Category::Secret,
            Kind::InstructionOverride
            | Kind::RolePlayJailbreak
            | Kind::HiddenText
            | Kind::EncodedPayload => Category::Injection,
            Kind::Custom => Category::Custom,
        }
    }

    /// Breaks ties between overlapping findings of equal length: the kind
    /// whose validator proves more wins (a checksummed card over a phone
    /// number made of the same digits, a prefixed key over a generic one).
    pub(super) fn specificity(self) -> u8 {
        match self {
            Kind::PrivateKey => 30,
            Kind::Jwt => 29,
            Kind::AnthropicKey => 28,
            Kind::GithubToken | Kind::GitlabToken | Kind::SlackToken => 27,
            Kind::GoogleApiKey | Kind::AwsAccessKey => 26,
            Kind::OpenaiKey => 25,
            Kind::CreditCard => 20,
            Kind::Iban => 19,
            Kind::UsSsn => 18,
            Kind::Email => 17,
            Kind::Ipv6 => 16,
            Kind::Ipv4 => 15,
            Kind::Phone => 14,
            Kind::Custom => 10,
            Kind::HiddenText => 4,
            Kind::InstructionOverride => 3,
            Kind::RolePlayJailbreak => 2,
            Kind::EncodedPayload => 1,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding means for the caller: data to hide (PII, secrets, custom
/// rules) or an attack to refuse (injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Pii,
    Secret,
    Injection,
    Custom,
}

impl Category {
    fn bit(self) -> u8 {
        match self {
            Category::Pii => 1,
            Category::Secret => 2,
            Category::Injection => 4,
            Category::Custom => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Pii => "pii",
            Category::Secret => "secret",
            Category::Injection => "injection",
            Category::Custom => "custom",
        }
    }
}

/// A set of categories, e.g. which findings a [`super::Redactor`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(u8);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);
    /// Personal data, secrets and custom rules: what redaction hides by
    /// default. Injection findings are for refusing a request; replacing
    /// the phrase would only hide the evidence.
    pub const REDACTABLE: CategorySet = CategorySet(1 | 2 | 8);
    pub const ALL: CategorySet = CategorySet(1 | 2 | 4 | 8);

    pub fn of(categories: &[Category]) -> CategorySet {
        CategorySet(categories.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn contains(self, category: Category) -> bool {
        self.0 & category.bit() != 0
    }

    pub fn with(self, category: Category) -> CategorySet {
        CategorySet(self.0 | category.bit())
    }
}

/// One thing found: which detector, which of its rules, and where (byte
/// offsets into the scanned text, or into the whole stream for a
/// [`super::StreamScanner`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub kind: Kind,
    /// The rule within the detector (`phone_nanp`, `ignore_previous`) or
    /// the custom rule's configured name.
    pub rule: Arc<str>,
    pub range: Range<usize>,
}

impl Finding {
    pub fn category(&self) -> Category {
        self.kind.category()
    }

    /// The placeholder label: the kind's (`EMAIL`), or for a custom rule its
    /// name in upper case (`PROJECT_CODENAME`).
    pub fn label(&self) -> String {
        if self.kind == Kind::Custom {
            custom_label(&self.rule)
        } else {
            self.kind.label().to_owned()
        }
    }
}

/// A custom rule's name as a placeholder label; names are validated to
/// `[A-Za-z0-9_-]`, so this only folds case and dashes.
pub(super) fn custom_label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
