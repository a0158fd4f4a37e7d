"""s5lib.bin"""
