//! The one error type of object parsing and relocation, with enough context to find the byte.

/// Why an ELF object could not be parsed, linked or relocated.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The bytes are not a little-endian 64-bit relocatable ELF file for BPF.
    #[error("not a loadable BPF object: {reason}")]
    NotBpfObject {
        /// What is wrong with the ELF header.
        reason: String,
    },
    /// The `object` crate rejected a structure of the ELF file.
    #[error("malformed ELF ({context}): {source}")]
    Elf {
        /// Which structure was being read.
        context: String,
        /// The underlying reader error.
        #[source]
        source: object::read::Error,
    },
    /// A section's contents are inconsistent.
    #[error("section '{section}' at byte {offset}: {reason}")]
    Section {
        /// Section name.
        section: String,
        /// Byte offset inside the section.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The `.BTF` type information is malformed or does not describe what we need.
    #[error(".BTF at byte {offset}: {reason}")]
    Btf {
        /// Byte offset inside `.BTF` (0 when the problem is not tied to one place).
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A map definition is malformed or uses something we do not support.
    #[error("map '{map}' (section '{section}'): {reason}")]
    Map {
        /// Map (variable or section) name.
        map: String,
        /// Section the definition lives in.
        section: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation or call in a code section cannot be resolved.
    #[error("section '{section}', instruction {insn_index} (byte {}), symbol '{symbol}': {reason}", insn_index * 8)]
    Relocation {
        /// Code section name.
        section: String,
        /// Instruction index inside the section.
        insn_index: usize,
        /// Symbol the relocation or call refers to (empty if none).
        symbol: String,
        /// What is wrong.
        reason: String,
    },
    /// The code calls or loads a symbol that lives outside the object (a kfunc, ksym or kconfig
    /// extern); nothing here resolves those, so the object is refused rather than half-loaded.
    #[error(
        "section '{section}', instruction {insn_index} (byte {}): extern symbol '{symbol}' is not \
         supported (kfuncs, __ksym and __kconfig externs cannot be resolved by this loader)",
        insn_index * 8
    )]
    Extern {
        /// Code section name.
        section: String,
        /// Instruction index inside the section.
        insn_index: usize,
        /// The undefined symbol.
        symbol: String,
    },
    /// A program could not be assembled or relocated.
    #[error("program '{program}': {reason}")]
    Program {
        /// Program (function symbol) name.
        program: String,
        /// What is wrong.
        reason: String,
    },
}

impl ObjectError {
    /// Wraps an `object` crate error with what was being read.
    pub(crate) fn elf(context: impl Into<String>, source: object::read::Error) -> Self {
        Self::Elf {
            context: context.into(),
            source,
        }
    }

    /// A BTF error at `offset` inside `.BTF`.
    pub(crate) fn btf(offset: usize, reason: impl Into<String>) -> Self {
        Self::Btf {
            offset,
            reason: reason.into(),
        }
    }
}
