"""DLPv2 and DDLP (Daniel & Tamar, TMLR 2024) as a vpkit plugin."""
