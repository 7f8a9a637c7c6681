"""graphopt.compiler/search"""
