"""s5lib.train"""
