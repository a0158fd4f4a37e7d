"""s5lib.losses"""
