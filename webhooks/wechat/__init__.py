"""The Official Account callback: its door, and WeChat's push protocol (signature, AES, XML, dedup)."""
