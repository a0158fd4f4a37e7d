"""s5lib.infer"""
