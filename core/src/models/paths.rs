//! Module paths of parameters (`text.layers.0.self_attn.q_proj.weight`), as every visitor and
//! mapper that names parameters builds them.
//!
//! Burn's derived modules announce each field with `enter_module(name, container)`. The
//! family layer wraps each family's network in one enum ([`crate::models::Network`]), whose
//! variant Burn announces as a module of its own (`container = "Enum:Network"`); that level is
//! left out here, so a parameter's path is the same whatever family holds it and the same as
//! before the family layer existed (checkpoints, optimizer state and export keys rely on it).

/// The path of the module being visited.
#[derive(Debug, Default, Clone)]
pub struct ModulePath {
    parts: Vec<String>,
    /// For every `enter_module`, whether it pushed a part (so `exit_module` pops alike).
    pushed: Vec<bool>,
}

impl ModulePath {
    /// An empty path (the root module).
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters a field or variant; enum variants add nothing to the path.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        let counts = !container_type.starts_with("Enum:");
        if counts {
            self.parts.push(name.to_string());
        }
        self.pushed.push(counts);
    }

    /// Leaves what the matching [`Self::enter`] entered.
    pub fn exit(&mut self) {
        if self.pushed.pop() == Some(true) {
            self.parts.pop();
        }
    }

    /// The dotted path (`text.layers.0.mlp.up_proj.weight`).
    pub fn joined(&self) -> String {
        self.parts.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_variants_are_left_out() {
        let mut p = ModulePath::new();
        p.enter("Qwen2Vl", "Enum:Network");
        p.enter("text", "Struct:Qwen2VlNet");
        p.enter("norm", "Struct:TextModel");
        p.enter("weight", "Struct:RmsNorm");
        assert_eq!(p.joined(), "text.norm.weight");
        p.exit();
        p.exit();
        assert_eq!(p.joined(), "text");
        p.exit();
        p.exit();
        assert_eq!(p.joined(), "");
    }
}
