"""Model providers: one async interface (`base.Provider`), one module per provider."""
