"""The docs stay honest: settings, guarantees, links and examples."""
