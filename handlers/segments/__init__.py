"""Segments: saved boolean expressions over tags and member attributes, their audience and its sync to
a WeChat user tag."""
