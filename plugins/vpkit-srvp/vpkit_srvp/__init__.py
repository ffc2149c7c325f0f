"""SRVP (Franceschi et al., ICML 2020) as a vpkit plugin."""
