"""Editor support: the language server (`policyc lsp`)."""
