"""graphopt.codegen"""
