"""graphopt.compiler/rewrite"""
