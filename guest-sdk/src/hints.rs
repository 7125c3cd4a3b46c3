//! MCP tool-annotation hints: effective values (with the MCP defaults for
//! unannotated hints, where a read-only tool is non-destructive and idempotent) and the "each set hint must equal the effective value" filter
//! shared by `mcpServers` rules and the annotation-hints policy.

use core::fmt;

use crate::{Annotations, ToolConstraints};

/// One of the four MCP ToolAnnotations hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    ReadOnly,
    Destructive,
    Idempotent,
    OpenWorld,
}

impl Hint {
    /// All four, in the order of the MCP specification.
    pub const ALL: [Hint; 4] = [
        Hint::ReadOnly,
        Hint::Destructive,
        Hint::Idempotent,
        Hint::OpenWorld,
    ];

    /// The MCP name of the hint without the `Hint` suffix (`readOnly`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Hint::ReadOnly => "readOnly",
            Hint::Destructive => "destructive",
            Hint::Idempotent => "idempotent",
            Hint::OpenWorld => "openWorld",
        }
    }

    /// The value MCP prescribes when the upstream did not annotate the hint.
    pub fn default_value(self) -> bool {
        match self {
            Hint::ReadOnly | Hint::Idempotent => false,
            Hint::Destructive | Hint::OpenWorld => true,
        }
    }

    /// The hint as the upstream sent it (`None` = not annotated).
    pub fn annotated(self, annotations: &Annotations) -> Option<bool> {
        match self {
            Hint::ReadOnly => annotations.read_only,
            Hint::Destructive => annotations.destructive,
            Hint::Idempotent => annotations.idempotent,
            Hint::OpenWorld => annotations.open_world,
        }
    }

    /// The default of an unannotated hint for a tool with these annotations. The
    /// MCP schema says `destructiveHint` and `idempotentHint` are meaningful only
    /// when `readOnlyHint` is false: a tool annotated `readOnlyHint: true` changes
    /// nothing, so unannotated it counts as non-destructive and idempotent.
    /// Otherwise the plain MCP default ([`Hint::default_value`]).
    pub fn default_for(self, annotations: &Annotations) -> bool {
        match self {
            Hint::Destructive if annotations.read_only == Some(true) => false,
            Hint::Idempotent if annotations.read_only == Some(true) => true,
            _ => self.default_value(),
        }
    }

    /// The hint's effective value: the annotation as written, else its default for
    /// this tool ([`Hint::default_for`]).
    pub fn effective(self, annotations: &Annotations) -> bool {
        self.annotated(annotations)
            .unwrap_or_else(|| self.default_for(annotations))
    }
}

/// Effective `readOnlyHint` (MCP default `false`).
pub fn effective_read_only(annotations: &Annotations) -> bool {
    Hint::ReadOnly.effective(annotations)
}

/// Effective `destructiveHint` (MCP default `true`; `false` for a read-only tool).
pub fn effective_destructive(annotations: &Annotations) -> bool {
    Hint::Destructive.effective(annotations)
}

/// Effective `idempotentHint` (MCP default `false`; `true` for a read-only tool).
pub fn effective_idempotent(annotations: &Annotations) -> bool {
    Hint::Idempotent.effective(annotations)
}

/// Effective `openWorldHint` (MCP default `true`).
pub fn effective_open_world(annotations: &Annotations) -> bool {
    Hint::OpenWorld.effective(annotations)
}

/// Required hint values; `None` imposes no restriction on that hint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintFilter {
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

impl HintFilter {
    /// The required value for `hint`, if any.
    pub fn get(&self, hint: Hint) -> Option<bool> {
        match hint {
            Hint::ReadOnly => self.read_only,
            Hint::Destructive => self.destructive,
            Hint::Idempotent => self.idempotent,
            Hint::OpenWorld => self.open_world,
        }
    }

    /// Whether no hint is required (every tool passes).
    pub fn is_unrestricted(&self) -> bool {
        Hint::ALL.iter().all(|&h| self.get(h).is_none())
    }
}

impl From<&ToolConstraints> for HintFilter {
    fn from(c: &ToolConstraints) -> Self {
        HintFilter {
            read_only: c.read_only,
            destructive: c.destructive,
            idempotent: c.idempotent,
            open_world: c.open_world,
        }
    }
}

impl From<&HintFilter> for HintFilter {
    fn from(f: &HintFilter) -> Self {
        *f
    }
}

/// Why a tool fails a [`HintFilter`]: the first hint whose effective value differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintMismatch {
    pub hint: Hint,
    /// The value the filter requires.
    pub required: bool,
    /// The tool's effective value.
    pub effective: bool,
    /// Whether the upstream annotated the hint (else the MCP default applied).
    pub annotated: bool,
}

impl fmt::Display for HintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.annotated {
            "annotated"
        } else {
            "not annotated, MCP default"
        };
        write!(
            f,
            "{} is {} ({source}) but {} is required",
            self.hint.name(),
            self.effective,
            self.required
        )
    }
}

/// The first hint (in [`Hint::ALL`] order) the tool fails, or `None` if it passes.
pub fn hint_mismatch(
    hints: impl Into<HintFilter>,
    annotations: &Annotations,
) -> Option<HintMismatch> {
    let filter = hints.into();
    Hint::ALL.into_iter().find_map(|hint| {
        let required = filter.get(hint)?;
        let effective = hint.effective(annotations);
        (effective != required).then(|| HintMismatch {
            hint,
            required,
            effective,
            annotated: hint.annotated(annotations).is_some(),
        })
    })
}

/// Whether the tool's effective hints equal every hint the filter sets.
/// Accepts a [`HintFilter`] or a `&ToolConstraints`.
pub fn hints_pass(hints: impl Into<HintFilter>, annotations: &Annotations) -> bool {
    hint_mismatch(hints, annotations).is_none()
}

#[cfg(test)]
mod tests;
