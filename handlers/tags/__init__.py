"""Member tags: manual ones (one member, or a bulk file) and automatic ones kept by a rule."""
