//! Placeholder: the browser bindings arrive with the web issue.
