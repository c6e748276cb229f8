"""APT: approximated prompt tuning (Wu et al., arXiv 2306.15706); `layer` holds the module,
`method` the config, placement and registration."""
