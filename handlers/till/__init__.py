"""The staff till: purchases and their refunds."""
