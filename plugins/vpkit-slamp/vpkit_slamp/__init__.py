"""SLAMP (Akan et al., ICCV 2021) for vpkit."""
