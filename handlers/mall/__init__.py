"""The points mall: catalogue, orders and pick-ups, flash sales, group deals."""
