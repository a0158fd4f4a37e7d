"""s5lib.metrics"""
