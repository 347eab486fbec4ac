"""The merchant's product catalogue: products by SKU, their CSV/XLSX import, and the till's SKU lookup."""
