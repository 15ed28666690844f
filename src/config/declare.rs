//! How a setting is declared: the [`settings!`] macro, which turns one line
//! per setting (doc, type, default, value name, resolver) into the clap
//! flag, the TOML key, the `[default: …]` of `--help`, the merge of layers
//! and the resolved [`super::Config`] field. It holds no setting itself;
//! they are all in `settings.rs`.

/// A setting's default: what it falls back to when no layer sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A value, written as on the command line (`--key=VALUE` parses it).
    Value(&'static str),
    /// Worked out at start-up from the host; says how.
    Computed(&'static str),
    /// No default: the operator must set it.
    Required,
    /// Unset means the feature is off.
    Off,
}

impl Fallback {
    /// The default as the tables in README.md and docs/ write it: the value
    /// itself, or one of the words `computed`, `required`, `off`.
    pub fn cell(&self) -> &'static str {
        match self {
            Fallback::Value(value) => value,
            Fallback::Computed(_) => "computed",
            Fallback::Required => "required",
            Fallback::Off => "off",
        }
    }
}

/// One setting's declaration, as `--help`, the docs and their tests see it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The field name; the flag and TOML key are its kebab-case form.
    pub name: &'static str,
    pub value_name: &'static str,
    pub default: Fallback,
    /// The doc comment's lines.
    pub doc: &'static [&'static str],
}

impl Setting {
    /// The long flag without its dashes, which is also the TOML key.
    pub fn key(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The `--help` text: the doc, then the default in brackets.
    pub fn help(&self) -> String {
        let doc: Vec<&str> = self.doc.iter().map(|line| line.trim()).collect();
        let default = match self.default {
            Fallback::Value(value) => format!("[default: {value}]"),
            Fallback::Computed(how) => format!("[default: {how}]"),
            Fallback::Required => "[required]".to_string(),
            Fallback::Off => "[default: off]".to_string(),
        };
        format!("{} {default}", doc.join(" "))
    }
}

/// Declares every setting once:
///
/// ```text
/// /// Doc line(s), shown by --help and in the docs.
/// #[arg(extra clap attributes)]      (optional)
/// #[serde(extra serde attributes)]   (optional)
/// name: FileType => ConfigType = Fallback, "VALUE-NAME", resolver;
/// ```
///
/// and generates [`super::Layer`] (every field an `Option<FileType>`, the
/// TOML schema and the long flags), its merge [`super::Layer::over`],
/// [`super::Config`] (each field `resolver(key, merged value)?`) and
/// [`super::SETTINGS`].
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $(#[arg($($arg:tt)*)])?
        $(#[serde($($serde:tt)*)])?
        $name:ident: $raw:ty => $ty:ty = $default:expr, $value_name:literal, $resolve:path;
    )*) => {
        /// Every setting's declaration, in the order `--help` lists them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                name: stringify!($name),
                value_name: $value_name,
                default: $default,
                doc: &[$($doc),+],
            },
        )*];

        /// One layer of settings: every field optional, so layers can be
        /// stacked. The same struct is the TOML schema and the set of long
        /// flags.
        #[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Layer {$(
            #[arg(
                long,
                value_name = $value_name,
                help = setting(stringify!($name)).help()
                $(, $($arg)*)?
            )]
            $(#[serde($($serde)*)])?
            pub $name: Option<$raw>,
        )*}

        impl Layer {
            /// `self` on top of `below`: a field set here wins.
            pub fn over(self, below: Layer) -> Layer {
                Layer { $($name: self.$name.or(below.$name),)* }
            }

            /// Resolves relative paths against `dir`.
            pub(super) fn rebase(&mut self, dir: &std::path::Path) {
                $(Rebase::rebase(&mut self.$name, dir);)*
            }
        }

        /// Every setting, resolved and validated.
        #[derive(Debug, Clone)]
        pub struct Config {$(
            $(#[doc = $doc])+
            pub $name: $ty,
        )*}

        impl Config {
            /// Each field from its merged value, through its resolver.
            pub(super) fn resolve(layer: Layer) -> Result<Config, ConfigError> {
                Ok(Config {$(
                    $name: $resolve(&setting(stringify!($name)).key(), layer.$name)?,
                )*})
            }
        }
    };
}
