"""s5lib.data"""
