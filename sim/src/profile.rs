//! RON profiles — the NVMe model, fault profiles, CPU costs: built into the binary as
//! presets, or read from files. One way to parse (errors say where), to print, to find a
//! preset and to take a flag's "preset or file", for every kind.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `text` as a `what` (e.g. "NVMe model"); a syntax error or an unknown or missing
/// field says where, as `line:column` and in words.
pub(crate) fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
    ron::from_str(text).map_err(|e| {
        let (line, col) = (e.span.start.line, e.span.start.col);
        format!(
            "{what} is not valid RON at {line}:{col} (line {line}, column {col}): {}",
            e.code
        )
    })
}

/// `value` as the RON text [`parse`] reads back.
pub(crate) fn to_ron<T: Serialize>(value: &T) -> String {
    ron::ser::to_string_pretty(value, ron::ser::PrettyConfig::default())
        .expect("a profile of numbers, flags and names serialises")
}

/// The preset `name` among `presets` (name, RON text), read with `from_ron`; an unknown name
/// gets an error listing the names there are.
pub(crate) fn preset<T>(
    what: &str,
    name: &str,
    presets: &[(&str, &str)],
    from_ron: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    let (_, text) = presets.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = presets.iter().map(|(n, _)| *n).collect();
        format!(
            "unknown {what} preset {name:?}; the presets are {}",
            names.join(", ")
        )
    })?;
    from_ron(text).map_err(|e| format!("{what} preset {name:?}: {e}"))
}

/// What a `--flag PRESET|FILE` names: the preset `name` if there is one (`presets`), else the
/// RON file at path `name`.
pub fn preset_or_file<T>(
    flag: &str,
    name: &str,
    presets: &[&str],
    preset: impl Fn(&str) -> Result<T, String>,
    from_ron: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    if presets.contains(&name) {
        return preset(name);
    }
    let path = Path::new(name);
    if !path.exists() {
        return Err(format!(
            "--{flag}={name}: neither a preset ({}) nor a file",
            presets.join(", ")
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--{flag}={name}: {e}"))?;
    from_ron(&text).map_err(|e| format!("--{flag}={name}: {e}"))
}
