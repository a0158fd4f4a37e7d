"""s5lib.models"""
