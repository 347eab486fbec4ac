"""Credit (信用额度 / 赊账): limits, the ledger, repayments, overdue charges."""
