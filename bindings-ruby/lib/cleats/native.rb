# Loads the compiled engine binding (cleats_ext.so, built by extconf.rb or `rake compile`): it
# defines Cleats::Native and the exception classes (Cleats::Error and subclasses).
require "cleats_ext"
